"""The floor: the constant predictor, the training split's median label, scored like a model.

A model that does not beat it has learned nothing it can use from its inputs (on ICT-MMMO's
labels, 1-5, several models did not). It sees no input, so its numbers are the same at every
spectrum point: one value per metric and split. The median because it is the constant with the
least MAE on the training labels; its correlation is 0 by the degenerate-prediction rule of
`robustmsa.evaluation.metrics`.

A study logs the floor on its parent run as ``floor/<split>/<metric>`` (valid and test, real data
too); every figure of a run draws it as a dotted line beside the model and the oracle, and the
model comparison lists it as the model `FLOOR`.
"""

from __future__ import annotations

import time

import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from robustmsa.evaluation.metrics import regression_metrics

FLOOR = "constant"  # its name among the models of a comparison
FLOOR_LABEL = "constant predictor (train median)"  # its legend in figures
FLOOR_PREFIX = "floor/"  # floor/<split>/<metric> on a study's parent run


def train_median(train_labels: np.ndarray) -> float:
    """The median of the training labels (N,), the constant prediction."""
    return float(np.median(np.asarray(train_labels, dtype=np.float64)))


def floor_metrics(median: float, labels: np.ndarray) -> dict[str, float]:
    """Every metric of predicting ``median`` for each of ``labels`` (N,)."""
    constant = np.full(len(labels), median, dtype=np.float32)
    return {k: float(v) for k, v in regression_metrics(constant, labels).items()}


def floor_predictions(median: float, evaluator) -> dict[str, np.ndarray]:
    """The constant prediction at every point of ``evaluator`` (a `SpectrumEvaluator`), as its
    `table` takes them: the floor's rows in the long form of a model's."""
    n = len(evaluator.split)
    return {p.key: np.full(n, median, dtype=np.float32) for p in evaluator.points}


def log_floor(client: MlflowClient, run_id: str, floors: dict[str, dict[str, float]]) -> None:
    """Log ``{split: {metric: value}}`` as ``floor/<split>/<metric>`` (NaN metrics left out)."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{FLOOR_PREFIX}{split}/{metric}", value, now, 0)
        for split, values in floors.items()
        for metric, value in values.items()
        if np.isfinite(value)
    ]
    client.log_batch(run_id, metrics=metrics)


def floors_in(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{split: {metric: value}}`` of the ``floor/<split>/<metric>`` entries of a run's
    ``metrics``; {} when there are none."""
    found: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(FLOOR_PREFIX):
            split, metric = key.removeprefix(FLOOR_PREFIX).split("/", 1)
            found.setdefault(split, {})[metric] = value
    return found


def logged_floor(client: MlflowClient, run_id: str | None) -> dict[str, dict[str, float]]:
    """`floors_in` of the run ``run_id`` (a study's parent); {} for None."""
    return floors_in(client.get_run(run_id).data.metrics) if run_id is not None else {}
