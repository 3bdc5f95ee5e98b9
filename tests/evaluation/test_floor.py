"""The floor: the constant predictor (the training median) scored like a model
(`robustmsa.evaluation.floor`), logged on a study's parent and drawn in its figures."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from robustmsa.evaluation.figures import curve_figure, curve_series
from robustmsa.evaluation.floor import (
    FLOOR_LABEL,
    floor_metrics,
    floor_predictions,
    log_floor,
    logged_floor,
    train_median,
)
from robustmsa.evaluation.metrics import regression_metrics
from robustmsa.evaluation.spectrum import SpectrumEvaluator
from robustmsa.spectrum import build_points


def test_the_floor_is_the_training_median_scored_on_the_split(tiny_splits):
    train, valid = tiny_splits["train"], tiny_splits["valid"]
    median = train_median(train.labels.numpy())
    assert median == pytest.approx(float(np.median(train.labels.numpy().astype(np.float64))))
    labels = valid.labels.numpy()
    got = floor_metrics(median, labels)
    assert got["mae"] == pytest.approx(float(np.mean(np.abs(labels - median))), rel=1e-6)
    assert got["corr"] == 0.0  # constant predictions: the degenerate-prediction rule
    assert got == {
        k: float(v)
        for k, v in regression_metrics(np.full(len(labels), median, np.float32), labels).items()
    }


def test_the_floor_is_the_same_at_every_point_of_the_spectrum(tiny_splits):
    median = train_median(tiny_splits["train"].labels.numpy())
    evaluator = SpectrumEvaluator(
        tiny_splits["valid"], build_points(["clean", "missing@all", "noise@all"]), seed=0
    )
    rows = evaluator.table(floor_predictions(median, evaluator))
    expected = floor_metrics(median, tiny_splits["valid"].labels.numpy())
    assert len({(r["protocol"], r["level"]) for r in rows}) == 23
    for r in rows:
        assert r["value"] == pytest.approx(expected[r["metric"]], nan_ok=True), r


def test_logged_on_a_run_and_read_back(tmp_path, tiny_splits):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = client.create_run(client.create_experiment("floor")).info.run_id
    median = train_median(tiny_splits["train"].labels.numpy())
    floors = {s: floor_metrics(median, tiny_splits[s].labels.numpy()) for s in ("valid", "test")}
    log_floor(client, run, floors)
    back = logged_floor(client, run)
    assert back == {s: {k: v for k, v in f.items() if np.isfinite(v)} for s, f in floors.items()}
    assert logged_floor(client, None) == {}


def test_figures_draw_the_floor_dotted_with_its_name():
    rows = [
        {"protocol": "missing", "modalities": "all", "level": lv, "metric": "mae", "value": lv}
        for lv in (0.0, 0.5, 1.0)
    ]
    series = curve_series(rows, "missing", "mae")
    fig = curve_figure("missing", series, {}, metric="mae", split="valid", floor=1.3)
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == FLOOR_LABEL]
    assert line.get_linestyle() == ":" and list(line.get_ydata()) == [1.3, 1.3]
    bare = curve_figure("missing", series, {}, metric="mae", split="valid")
    assert FLOOR_LABEL not in [ln.get_label() for ln in bare.axes[0].get_lines()]
