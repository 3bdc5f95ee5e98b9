"""`robustmsa.analysis`: a study read back from a real sqlite MLflow store, built here the way
a study logs (the study config's params, trials with per-epoch metrics, spectrum tables, the
oracle on the parent, a compare_models parent with its comparison table)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from paths import REPO
from robustmsa import analysis
from robustmsa.config import load
from robustmsa.errors import RobustMSAError
from robustmsa.tracking.runs import flatten, log_params
from robustmsa.tracking.spectrum import ORACLE_SOURCE, log_spectrum
from robustmsa.training.checkpoint import ROWS_FILE

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # MLflow's log_table (the study's own logging, in the fixture) under pandas 3
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes"),
]

LEVELS = (0.0, 0.5, 1.0)
MODALITIES = ("text", "audio")
T0 = 1_700_000_000_000  # the study's start, epoch ms


def spectrum(offset: float, *, grid: bool = True) -> list[dict]:
    """A small spectrum table: clean, missing and noise curves on ``all`` and ``text``, two
    patterns, and a 3 x 3 grid per modality; values ``offset + level``."""
    rows = []
    for metric in ("mae", "corr"):

        def row(protocol, modalities, level, value, metric=metric):
            return dict(
                protocol=protocol,
                modalities=modalities,
                level=level,
                metric=metric,
                value=value,
                n=10,
            )

        rows.append(row("clean", "all", 0.0, offset))
        for protocol in ("missing", "noise"):
            for scope in ("all", "text"):
                rows += [row(protocol, scope, lv, offset + lv) for lv in LEVELS]
        rows += [row("patterns", p, 0.0, offset + 0.3) for p in ("text", "text+audio")]
        if grid:
            for m in MODALITIES:
                for eta in LEVELS:
                    rows += [
                        row("grid", f"{m}/eta={eta:.2f}", lam, offset + lam + eta) for lam in LEVELS
                    ]
    return rows


def log_history(client, run_id, key, values, start_ms):
    """``values[i]`` at epoch ``i + 1``, one second apart from ``start_ms``."""
    client.log_batch(
        run_id,
        metrics=[Metric(key, v, start_ms + 1000 * (i + 1), i + 1) for i, v in enumerate(values)],
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("search", str(root / "artifacts"))
    config = load(REPO / "studies" / "configs" / "qa_moe_search.yaml")
    params = flatten(config.to_dict())

    older = client.create_run(exp, start_time=T0 - 10_000, tags={"robustmsa.study": "s"})
    parent = client.create_run(exp, start_time=T0, tags={"robustmsa.study": "s"}).info.run_id
    log_params(client, parent, params)
    log_spectrum(client, parent, spectrum(0.1), split="valid", source=ORACLE_SOURCE, figures=False)
    log_spectrum(client, parent, spectrum(0.1), split="test", source=ORACLE_SOURCE, figures=False)

    def child(trial_id, start, tags=(), drawn=None):
        tags = {"mlflow.parentRunId": parent, "robustmsa.trial_id": trial_id, **dict(tags)}
        run = client.create_run(exp, start_time=start, tags=tags, run_name=f"trial_{trial_id}")
        log_params(client, run.info.run_id, {**params, **(drawn or {})})
        return run.info.run_id

    reference = child("ref0", T0 + 100, {"robustmsa.role": "reference"})
    log_spectrum(client, reference, spectrum(0.7), split="test", figures=False)
    drawn_a = {
        "model.params.num_experts": 4,
        "model.params.top_k": 3,
        "model.params.uncertainty_weight": 0.05,
        "training.lr": 0.002,
    }
    drawn_b = {**drawn_a, "model.params.num_experts": 6, "model.params.top_k": 5}
    completed = child("aaaa", T0 + 1000, {"robustmsa.outcome": "completed"}, drawn_a)
    pruned = child("bbbb", T0 + 2000, {"robustmsa.outcome": "pruned"}, drawn_b)
    log_history(client, completed, "val/spectrum_score", [0.9, 0.8, 0.85], T0 + 1000)
    log_history(client, completed, "best/val/spectrum_score", [0.9, 0.8, 0.8], T0 + 1000)
    log_history(client, pruned, "val/spectrum_score", [1.2], T0 + 2500)
    log_history(client, pruned, "best/val/spectrum_score", [1.2], T0 + 2500)
    client.set_tag(completed, "robustmsa.epochs_run", "3")
    client.set_tag(pruned, "robustmsa.epochs_run", "1")
    for run_id in (completed, pruned, reference):
        client.set_terminated(run_id, end_time=T0 + 9000)
    log_spectrum(client, completed, spectrum(0.5, grid=False), split="valid", figures=False)
    log_spectrum(client, completed, spectrum(0.6), split="test", figures=False)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / ROWS_FILE).write_text(json.dumps(spectrum(0.9, grid=False)))
        client.log_artifacts(pruned, tmp, artifact_path="checkpoint")
    client.log_batch(
        parent,
        metrics=[
            Metric("best/val/spectrum_score", 0.8, T0, 0),
            Metric("reference/val/spectrum_score", 0.75, T0, 0),
            Metric("oracle/val/spectrum_score", 0.2, T0, 0),
        ],
    )
    client.set_tag(parent, "robustmsa.selected_run_id", completed)
    client.set_tag(parent, "robustmsa.reference_run_id", reference)
    client.set_tag(parent, "robustmsa.best_trial", "aaaa")
    client.create_run(exp, tags={"mlflow.parentRunId": parent})  # a run that is no trial
    client.create_experiment("empty", str(root / "artifacts"))

    # A compare_models study: its table as the study logs it.
    from robustmsa.search.model_comparison import comparison_table, log_model_comparison

    compare_exp = client.create_experiment("compare", str(root / "artifacts"))
    compare = client.create_run(compare_exp, tags={"robustmsa.study": "c"}).info.run_id
    log_params(client, compare, {"search.kind": "compare_models", "search.space": "[]"})
    table = []
    for split in ("valid", "test"):
        # the study's own point rows: its spectrum.protocols, no grid
        by_model = {"reference": spectrum(0.7, grid=False), "qa_moe": spectrum(0.4, grid=False)}
        table += comparison_table(by_model, split, spectrum(0.1, grid=False))
    log_model_comparison(client, compare, table, {})
    return dict(
        uri=uri,
        root=root,
        client=client,
        config=config,
        older=older.info.run_id,
        parent=parent,
        reference=reference,
        completed=completed,
        pruned=pruned,
        compare=compare,
    )


@pytest.fixture(scope="module")
def study(store):
    return analysis.find_study(store["client"], "search")


# ---------------------------------------------------------------------------------------------
# The store and the study


def test_the_names_agree_with_what_the_study_logs():
    from robustmsa.search import model_comparison, study, trial
    from robustmsa.training import loop

    assert analysis.ROLE_TAG == trial.ROLE_TAG
    assert analysis.REFERENCE_ROLE == study.REFERENCE_ROLE
    assert analysis.OBJECTIVE == loop.OBJECTIVE
    assert analysis.SEARCH_METRIC == study.SEARCH_METRIC
    assert analysis.ORACLE_MODEL == model_comparison.ORACLE


def test_importing_it_loads_neither_torch_nor_ray():
    import subprocess
    import sys

    probe = "import sys, robustmsa.analysis; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "uri, path",
    [
        ("sqlite:////abs/mlruns.db", "/abs/mlruns.db"),
        ("sqlite:///rel/mlruns.db", "rel/mlruns.db"),
        ("sqlite:///a%20b.db?mode=ro", "a b.db"),
        ("sqlite://", None),
        ("http://127.0.0.1:5000", None),
        ("file:///tmp/mlruns", None),
    ],
)
def test_sqlite_path(uri, path):
    assert analysis.sqlite_path(uri) == (Path(path) if path else None)


def test_a_missing_sqlite_store_is_refused_and_not_created(tmp_path):
    db = tmp_path / "nope" / "mlruns.db"
    with pytest.raises(RobustMSAError, match=f"no MLflow store at {db} "):
        analysis.open_client(f"sqlite:///{db}")
    assert not db.parent.exists()


def test_the_latest_study_by_default(store, study):
    assert study.info.run_id == store["parent"]
    assert analysis.study_kind(study) == "search"
    assert analysis.selected_run_id(study) == store["completed"]
    assert analysis.reference_run_id(study) == store["reference"]
    older = analysis.find_study(store["client"], "search", store["older"])
    assert older.info.run_id == store["older"]


@pytest.mark.parametrize("experiment", ["empty", "no_such_experiment"])
def test_an_empty_or_missing_experiment_is_one_clear_error(store, experiment):
    with pytest.raises(RobustMSAError) as raised:
        analysis.find_study(store["client"], experiment)
    assert str(raised.value) == f"experiment '{experiment}' has no study runs in {store['uri']}"


def test_a_run_that_is_no_study_of_the_experiment_is_refused(store):
    client = store["client"]
    with pytest.raises(RobustMSAError, match="is not the parent run of a study of experiment"):
        analysis.find_study(client, "search", store["completed"])
    with pytest.raises(RobustMSAError, match="is not the parent run of a study of experiment"):
        analysis.find_study(client, "compare", store["parent"])
    with pytest.raises(RobustMSAError, match="not found"):
        analysis.find_study(client, "search", "0" * 32)


def test_a_study_of_another_kind_is_refused(store):
    client = store["client"]
    found = analysis.find_study(client, "compare", kind="compare_models")
    assert found.info.run_id == store["compare"]
    with pytest.raises(RobustMSAError, match=r"has no search study runs .* \(only compare_models"):
        analysis.find_study(client, "compare", kind="search")
    with pytest.raises(RobustMSAError, match="is a compare_models study, not a search study"):
        analysis.find_study(client, "compare", store["compare"], kind="search")


def test_the_search_space_is_read_back_from_the_parent(store, study):
    assert analysis.search_space(study) == store["config"].search.space


# ---------------------------------------------------------------------------------------------
# Tables


def test_trials_frame_has_one_typed_row_per_trial(store, study):
    trials = analysis.trials_frame(store["client"], study)
    assert list(trials["trial_id"]) == ["aaaa", "bbbb"]  # by start time; no reference, no stray
    assert list(trials.columns[: len(analysis.TRIAL_COLUMNS)]) == list(analysis.TRIAL_COLUMNS)
    names = [p.name for p in store["config"].search.space]
    assert list(trials.columns[len(analysis.TRIAL_COLUMNS) :]) == names
    a, b = trials.to_dict("records")
    assert (a["outcome"], a["score"], a["epochs"]) == ("completed", 0.8, 3)
    assert (b["outcome"], b["score"], b["epochs"]) == ("pruned", 1.2, 1)
    assert a["model.params.num_experts"] == 4 and isinstance(a["model.params.num_experts"], int)
    assert a["training.lr"] == pytest.approx(0.002)
    assert a["duration_s"] == pytest.approx(8.0)
    assert a["run_id"] == store["completed"]
    every = analysis.trials_frame(store["client"], study, include_roles=True)
    assert list(every["role"].fillna("")) == ["reference", "", ""]


def test_score_history_is_per_epoch_with_the_studys_clock(store, study):
    trials = analysis.trials_frame(store["client"], study)
    history = analysis.score_history(store["client"], trials, since=study.info.start_time)
    assert list(history.columns) == list(analysis.HISTORY_COLUMNS)
    assert list(zip(history["trial_id"], history["step"], history["value"], strict=True)) == [
        ("aaaa", 1, 0.9),
        ("aaaa", 2, 0.8),
        ("bbbb", 1, 1.2),
        ("aaaa", 3, 0.85),
    ]
    assert list(history["elapsed_s"]) == [2.0, 3.0, 3.5, 4.0]  # in the order they were logged
    losses = analysis.score_history(store["client"], trials, "train/loss")
    assert losses.empty and list(losses.columns) == list(analysis.HISTORY_COLUMNS)


def test_outcome_summary(store, study):
    summary = analysis.outcome_summary(analysis.trials_frame(store["client"], study))
    assert list(summary.index) == ["completed", "pruned"]
    assert summary.loc["completed", "trials"] == 1
    assert summary.loc["pruned", "total_epochs"] == 1
    assert summary.loc["completed", "best_score"] == 0.8


def test_trial_tables_curve_summary_and_excess(store, study):
    client = store["client"]
    tables = analysis.trial_tables(client, study)
    assert list(tables) == ["trial aaaa", "reference"]
    valid = analysis.trial_tables(client, study, store["pruned"], "valid")
    assert list(valid) == ["trial bbbb"]  # from its checkpoint; the reference has no valid
    with pytest.raises(RobustMSAError, match="logged no test spectrum"):
        analysis.trial_tables(client, study, store["pruned"])
    oracle = analysis.study_oracle(client, study, "test")
    summary = analysis.curve_summary({**tables, "oracle": oracle, "none": None})
    assert list(summary.columns) == ["trial aaaa", "reference", "oracle"]
    assert summary.index[0] == "spectrum_score"
    assert "missing/text" in summary.index and "patterns" in summary.index
    assert not any(k.startswith("grid/") for k in summary.index)
    assert summary.loc["missing/all", "trial aaaa"] == pytest.approx(0.6 + 0.5)
    above = analysis.excess_rows(tables["trial aaaa"], oracle)
    assert len(above) == len(oracle)
    assert all(r["value"] == pytest.approx(0.5) for r in above)
    assert analysis.study_scores(study) == {"best": 0.8, "reference": 0.75, "oracle": 0.2}


def test_the_model_comparison_table(store):
    client = store["client"]
    compare = analysis.find_study(client, "compare")
    table = analysis.model_comparison_table(client, compare)
    assert list(table.index) == ["reference", "qa_moe", "oracle"]
    assert list(table.columns) == [
        (s, k)
        for s in ("valid", "test")
        for k in ("spectrum_mae", "oracle_excess_mae", "clean_mae")
    ]
    assert table.loc["qa_moe", ("test", "oracle_excess_mae")] == pytest.approx(0.3)
    assert np.isnan(table.loc["oracle", ("valid", "oracle_excess_mae")])
    every = analysis.model_comparison_table(client, compare, summaries=())
    assert ("valid", "missing/all/mean_mae") in every.columns
    with pytest.raises(RobustMSAError, match=r"has no comparison/models\.parquet"):
        analysis.model_comparison_table(client, analysis.find_study(client, "search"))
    assert analysis.logged_images(client, compare.info.run_id, "comparison") == {}


# ---------------------------------------------------------------------------------------------
# Optuna


def test_the_optuna_study_is_rebuilt_from_the_trials(store, study):
    trials = analysis.trials_frame(store["client"], study)
    space = analysis.search_space(study)
    rebuilt = analysis.optuna_study(trials, space)
    a, b = rebuilt.trials
    assert a.state == optuna.trial.TrialState.COMPLETE and a.value == 0.8
    assert b.state == optuna.trial.TrialState.PRUNED and b.intermediate_values == {1: 1.2}
    assert a.params["model.params.top_k"] == 3
    assert a.distributions["model.params.top_k"].high == 4  # the trial's own num_experts
    assert b.distributions["model.params.top_k"].high == 6
    assert a.user_attrs == {"trial_id": "aaaa", "run_id": store["completed"]}
    one = analysis.param_importances(rebuilt)
    assert one.completed == 1 and len(one.values) == 4
    assert np.allclose(one.values.to_numpy(), 0.25)
    assert "1 completed trial" in one.notes[0]
    none = analysis.param_importances(analysis.optuna_study(trials.iloc[1:], space))
    assert none.values.empty and none.completed == 0 and none.notes
    for importances in (one, none):
        assert isinstance(analysis.importance_figure(importances), Figure)


def test_importances_find_the_parameter_that_matters():
    rng = np.random.default_rng(0)
    space = load(REPO / "studies" / "configs" / "qa_moe_search.yaml").search.space
    rows = []
    for i in range(40):
        experts = int(rng.integers(2, 9))
        lr = float(np.exp(rng.uniform(np.log(3e-4), np.log(3e-3))))
        rows.append(
            {
                "trial_id": f"t{i}",
                "run_id": f"r{i}",
                "outcome": "completed",
                "score": 1.0 + 5.0 * abs(np.log10(lr) + 3.0) + 0.001 * rng.standard_normal(),
                "epochs": 2,
                "model.params.num_experts": experts,
                "model.params.top_k": int(rng.integers(1, experts + 1)),
                "model.params.uncertainty_weight": float(rng.uniform(0.01, 1.0)),
                "training.lr": lr,
            }
        )
    found = analysis.param_importances(analysis.optuna_study(pd.DataFrame(rows), space))
    assert found.values.index[0] == "training.lr"
    assert found.values.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# Figures


def test_the_figures(store, study):
    client = store["client"]
    tables = analysis.trial_tables(client, study)
    oracle = analysis.study_oracle(client, study, "test")
    rows = tables["trial aaaa"]
    assert analysis.curve_protocols(rows) == ["missing", "noise"]
    curves = analysis.spectrum_curves_figure(tables, "missing", oracle=oracle)
    assert len([ax for ax in curves.axes if ax.get_visible()]) == 2  # all, text
    assert [ax.get_title() for ax in curves.axes[:2]] == ["all", "text"]
    one = analysis.spectrum_curves_figure(tables, "noise", scopes=["all"])
    assert len(one.axes) == 1 and len(one.axes[0].lines) == 2
    with pytest.raises(ValueError, match="no joint curve"):
        analysis.spectrum_curves_figure(tables, "joint")
    maps = analysis.heatmap_figures(rows, title="trial")
    assert len(maps) == len(MODALITIES)
    assert maps[0].axes[0].get_title().startswith("trial: text")
    assert analysis.heatmap_figures(spectrum(0.1, grid=False)) == []

    trials = analysis.trials_frame(client, study)
    history = analysis.score_history(client, trials, since=study.info.start_time)
    for x in ("elapsed_s", "step"):
        fig = analysis.score_history_figure(history, reference=0.75, oracle=0.2, x=x)
        assert len(fig.axes[0].lines) == 2 + 1 + 2  # two trials, the pruned cross, two lines
    space = analysis.search_space(study)
    effects = analysis.param_effects_figure(trials, space, reference=0.75)
    assert len([ax for ax in effects.axes if ax.get_visible()]) == len(space)
    with pytest.raises(ValueError, match="searched no parameter"):
        analysis.param_effects_figure(trials, [])
    compare = analysis.find_study(client, "compare")
    gap = analysis.oracle_gap_figure(analysis.model_comparison_table(client, compare))
    assert [t.get_text() for t in gap.axes[0].get_xticklabels()] == ["reference", "qa_moe"]
    for fig in (curves, maps[0], effects, gap):
        fig.savefig(Path(store["root"]) / "figure.png")  # renders without pyplot


def test_short_errors_does_nothing_outside_ipython():
    analysis.short_errors()
