"""The complete MLflow record of a spectrum evaluation (`robustmsa.tracking.spectrum`), against
a real sqlite tracking store: points, summaries, the oracle's ceiling, Parquet, the MLflow
table and the PNG figures.

One store per module (creating its tables takes seconds); every test works in its own
experiment. The store fixtures copy those of ``test_mlflow_logging.py`` (a test module's
fixtures are not importable under ``--import-mode=importlib``; a ``tests/tracking/conftest.py``
could hold them once for both).
"""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from robustmsa.evaluation.ceiling import oracle_rows
from robustmsa.evaluation.spectrum import ROW_FIELDS, SpectrumEvaluator
from robustmsa.evaluation.summaries import summarize
from robustmsa.models import MODELS
from robustmsa.spectrum import build_points
from robustmsa.tracking.runs import MAX_METRICS_PER_BATCH
from robustmsa.tracking.spectrum import log_spectrum, metric_key

# MLflow's own sqlalchemy store triggers this; it says nothing about robustmsa.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LEVELS = [round(0.1 * i, 1) for i in range(11)]
GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
METRICS = ("mae", "corr")
SUMMARIES = ("auilc", "mean", "ratemean", "worst")


@pytest.fixture
def batches(client, monkeypatch):
    """Metric counts of the client's real ``log_batch`` calls (it still logs)."""
    calls: list[int] = []
    real = client.log_batch

    def counting(run_id, metrics=(), params=(), tags=(), **kwargs):
        metrics = list(metrics)
        calls.append(len(metrics))
        return real(run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(client, "log_batch", counting)
    return calls


def _row(protocol, mods, level, metric, value):
    return {
        "protocol": protocol,
        "modalities": mods,
        "level": level,
        "metric": metric,
        "value": value,
        "n": 48,
    }


def _table(offset: float) -> list[dict]:
    """Every protocol family with distinct values per (protocol, scope, level, metric)."""
    rows = []
    for j, metric in enumerate(METRICS):
        base = offset + j
        rows.append(_row("clean", "all", 0.0, metric, base + 0.5))
        for k, (protocol, scope) in enumerate(
            [("missing", "all"), ("missing", "text"), ("noise", "all"), ("joint", "audio")]
        ):
            rows += [_row(protocol, scope, lv, metric, base + k + lv * lv) for lv in LEVELS]
        for k, subset in enumerate(["text", "text+audio", "text+audio+vision"]):
            rows.append(_row("patterns", subset, 0.0, metric, base + 0.1 * k))
        rows += [_row("random", f"draw{k}", 0.0, metric, base + 0.2 * k) for k in range(2)]
        for m in ("text", "vision"):
            for eta in GRID:
                mods = f"{m}/eta={eta:.2f}"
                rows += [_row("grid", mods, lam, metric, base + 10 * eta + lam) for lam in GRID]
    return rows


MODEL_ROWS, ORACLE_ROWS = _table(1.0), _table(0.25)


def _logged_name(row: dict, prefix: str = "") -> str:
    """The documented mapping: '+' -> '-', '=' -> '_', everything else kept."""
    mods = row["modalities"].replace("+", "-").replace("=", "_")
    return f"{prefix}spectrum/{row['protocol']}/{mods}/{row['metric']}"


def _histories(client, run_id, keys):
    history = client.get_metric_history
    return {k: sorted((m.step, m.value) for m in history(run_id, k)) for k in keys}


def _expected_histories(rows, prefix=""):
    out = defaultdict(list)
    for r in rows:
        out[_logged_name(r, prefix)].append((round(r["level"] * 100), r["value"]))
    return {k: sorted(v) for k, v in out.items()}


def _expected_summaries(rows, prefix=""):
    return {
        prefix + k.replace("+", "-").replace("=", "_"): v
        for k, v in summarize(rows).items()
        if math.isfinite(v)
    }


def _assert_table(frame, rows, oracle):
    """``frame`` holds ``rows`` then ``oracle``, tagged by ``source``. Floats compare to 1e-9:
    MLflow writes the JSON through pandas, at 10 significant digits (the Parquet is exact)."""
    assert list(frame.columns) == [*ROW_FIELDS, "source"]
    expected = [{**r, "source": "model"} for r in rows]
    expected += [{**r, "source": "oracle"} for r in oracle]
    got = frame.to_dict("records")
    assert len(got) == len(expected)
    floats = ("level", "value")
    for g, e in zip(got, expected, strict=True):
        exact = [k for k in e if k not in floats]
        assert {k: g[k] for k in exact} == {k: e[k] for k in exact}
        assert [g[k] for k in floats] == pytest.approx([e[k] for k in floats], rel=1e-9)


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 10_000, path  # axes, text and data: not a blank canvas


FIGURES = {
    f"{kind}_{metric}.png"
    for metric in METRICS
    for kind in (
        "curves_missing",
        "curves_noise",
        "curves_joint",
        "patterns",
        "heatmap_text",
        "heatmap_vision",
    )
}


def test_everything_of_one_evaluation_is_logged(
    client, experiment, run_id, batches, tmp_path, monkeypatch
):
    summaries = log_spectrum(client, run_id, MODEL_ROWS, reference_rows=ORACLE_ROWS)

    # Points: every row at step round(level * 100), model and oracle, with mapped names.
    points = _expected_histories(MODEL_ROWS)
    oracle_points = _expected_histories(ORACLE_ROWS, "oracle/")
    assert "spectrum/grid/text/eta_0.25/mae" in points
    assert "spectrum/patterns/text-audio/corr" in points
    assert points["spectrum/grid/vision/eta_0.75/mae"] == [
        (round(lam * 100), 1.0 + 7.5 + lam) for lam in GRID
    ]
    assert _histories(client, run_id, points) == points
    assert _histories(client, run_id, oracle_points) == oracle_points

    # Summaries: the model's returned and logged at step 0, the oracle's under oracle/.
    expected = _expected_summaries(MODEL_ROWS)
    oracle_expected = _expected_summaries(ORACLE_ROWS, "oracle/")
    assert "robust/grid/text/eta_0.50/auilc_mae" in expected
    assert "robust/patterns/worst_mae" in expected
    assert summaries == pytest.approx(expected)
    logged = client.get_run(run_id).data.metrics
    assert set(logged) == set(points) | set(oracle_points) | set(expected) | set(oracle_expected)
    for key, value in {**expected, **oracle_expected}.items():
        assert logged[key] == pytest.approx(value), key
        assert [s for s, _ in _histories(client, run_id, [key])[key]] == [0]

    # One batched log_metrics call: model and oracle points and summaries in one request
    # (`log_metrics` splits only past MLflow's limit, tested in test_mlflow_logging.py).
    n_metrics = len(MODEL_ROWS) + len(ORACLE_ROWS) + len(expected) + len(oracle_expected)
    assert n_metrics <= MAX_METRICS_PER_BATCH
    assert batches == [n_metrics]

    # Parquet artifacts round-trip to the very rows.
    for name, rows in (("spectrum_valid", MODEL_ROWS), ("oracle_valid", ORACLE_ROWS)):
        local = client.download_artifacts(run_id, f"spectrum/{name}.parquet", str(tmp_path))
        table = pq.read_table(local)
        assert table.column_names == list(ROW_FIELDS)
        assert table.to_pylist() == rows

    # The MLflow table: model then oracle rows, told apart by `source`. `load_table` finds the
    # runs through the fluent API, whose store is MLFLOW_TRACKING_URI, not the client's.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    frame = client.load_table(experiment, "tables/spectrum_valid.json", run_ids=[run_id])
    _assert_table(frame, MODEL_ROWS, ORACLE_ROWS)

    # Figures: one log_artifacts folder, every PNG valid.
    listed = client.list_artifacts(run_id, "figures/valid")
    assert {a.path.rsplit("/", 1)[-1] for a in listed} == FIGURES
    local = client.download_artifacts(run_id, "figures/valid", str(tmp_path))
    for name in FIGURES:
        _check_png(tmp_path / "valid" / name)


def test_test_split_keeps_its_prefix_and_folders(client, experiment, run_id, tmp_path):
    rows = [_row("missing", "all", lv, "mae", 1.0 + lv) for lv in (0.0, 0.5, 1.0)]
    oracle = [_row("missing", "all", lv, "mae", 0.5 + lv) for lv in (0.0, 0.5, 1.0)]
    log_spectrum(client, run_id, rows, split="test", reference_rows=oracle)
    logged = client.get_run(run_id).data.metrics
    assert set(logged) == {
        "test/spectrum/missing/all/mae",
        "test/oracle/spectrum/missing/all/mae",
        *(f"test/robust/missing/all/{s}_mae" for s in SUMMARIES),
        *(f"test/oracle/robust/missing/all/{s}_mae" for s in SUMMARIES),
    }
    assert logged["test/oracle/robust/missing/all/worst_mae"] == pytest.approx(1.5)
    assert _histories(client, run_id, ["test/oracle/spectrum/missing/all/mae"]) == {
        "test/oracle/spectrum/missing/all/mae": [(0, 0.5), (50, 1.0), (100, 1.5)]
    }
    paths = sorted(a.path for a in client.list_artifacts(run_id, "spectrum"))
    assert paths == ["spectrum/oracle_test.parquet", "spectrum/spectrum_test.parquet"]
    assert [a.path for a in client.list_artifacts(run_id, "figures")] == ["figures/test"]
    assert [a.path for a in client.list_artifacts(run_id, "figures/test")] == [
        "figures/test/curves_missing_mae.png"
    ]
    # The table's artifact is MLflow's split-orient JSON, readable without MLflow.
    local = client.download_artifacts(run_id, "tables/spectrum_test.json", str(tmp_path))
    _assert_table(pd.read_json(local, orient="split"), rows, oracle)


def test_figures_off_and_no_reference(client, run_id):
    rows = [_row("noise", "all", lv, "mae", 1.0 + lv) for lv in (0.0, 1.0)]
    log_spectrum(client, run_id, rows, figures=False)
    assert client.list_artifacts(run_id, "figures") == []
    assert [a.path for a in client.list_artifacts(run_id, "spectrum")] == [
        "spectrum/spectrum_valid.parquet"
    ]
    assert not any(k.startswith("oracle/") for k in client.get_run(run_id).data.metrics)


def test_metric_key_maps_and_refuses():
    assert metric_key("spectrum/grid/text/eta=0.25/mae") == "spectrum/grid/text/eta_0.25/mae"
    mapped = metric_key("robust/patterns/text+audio/mean_mae")
    assert mapped == "robust/patterns/text-audio/mean_mae"
    assert metric_key("spectrum/random/draw0/acc2_has0") == "spectrum/random/draw0/acc2_has0"
    for bad, why in [
        ("spectrum/x:y/mae", "refuses the character"),
        ("spectrum/é/mae", "refuses the character"),
        ("spectrum//mae", "empty or relative"),
        ("spectrum/../mae", "empty or relative"),
        ("s/" + "x" * 250, "longer than 250"),
    ]:
        with pytest.raises(ValueError, match=why) as info:
            metric_key(bad)
        assert repr(bad) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": []}, "rows: the spectrum table is empty"),
        ({"split": "val"}, "split 'val' unknown"),
        ({"rows": [{"protocol": "clean", "level": 0.0}]}, r"rows\[0\]: missing field\(s\)"),
        ({"reference_rows": [_row("clean", "all", 0.0, "mae", 1.0), {}]}, r"reference_rows\[1\]"),
        ({"rows": [_row("clean", "a:b", 0.0, "mae", 1.0)]}, "refuses the character"),
        (
            {
                "rows": [
                    _row("patterns", "text+audio", 0.0, "mae", 1.0),
                    _row("patterns", "text-audio", 0.0, "mae", 2.0),
                ]
            },
            "both map to 'spectrum/patterns/text-audio/mae'",
        ),
    ],
)
def test_bad_input_raises_before_anything_is_logged(client, run_id, kwargs, message):
    args = {"rows": [_row("clean", "all", 0.0, "mae", 1.0)], **kwargs}
    with pytest.raises(ValueError, match=message):
        log_spectrum(client, run_id, **args)
    assert client.get_run(run_id).data.metrics == {}
    assert client.list_artifacts(run_id) == []


@pytest.fixture(scope="module")
def evaluated(tiny_splits):
    """A late-fusion model and the Bayes oracle on the real protocols of the tiny dataset."""
    spec = MODELS["late_fusion"]
    torch.manual_seed(0)
    model = spec.build(spec.config_cls(), dict(tiny_splits["valid"].meta.dims)).eval()
    points = build_points(
        ["clean", "missing@all", "noise@text", "patterns", "grid@audio"], [0.0, 0.5, 1.0]
    )
    evaluator = SpectrumEvaluator(tiny_splits["valid"], points, seed=3, batch_size=24)
    return evaluator.evaluate(model), oracle_rows(evaluator)


def test_real_protocols_of_a_model_and_its_oracle(client, run_id, evaluated, tmp_path):
    """The names the real protocol builders make (``text+audio``, ``audio/eta=0.50``) all log."""
    rows, oracle = evaluated
    log_spectrum(client, run_id, rows, reference_rows=oracle)
    finite = [r for r in rows if math.isfinite(r["value"])]
    finite_oracle = [r for r in oracle if math.isfinite(r["value"])]
    assert len(finite_oracle) == len(oracle) > 0  # the oracle is never constant on its inputs
    expected = {**_expected_histories(finite), **_expected_histories(finite_oracle, "oracle/")}
    assert "spectrum/grid/audio/eta_0.50/mae" in expected
    assert "oracle/spectrum/patterns/text-audio/mae" in expected
    got = _histories(client, run_id, expected)
    for key, history in expected.items():
        assert [s for s, _ in got[key]] == [s for s, _ in history], key
        assert [v for _, v in got[key]] == pytest.approx([v for _, v in history]), key

    names = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, "figures/valid")}
    assert {
        "curves_missing_mae.png",
        "curves_noise_mae.png",
        "patterns_mae.png",
        "heatmap_audio_mae.png",
    } <= names
    client.download_artifacts(run_id, "figures/valid/heatmap_audio_mae.png", str(tmp_path))
    _check_png(tmp_path / "heatmap_audio_mae.png")
