"""A study's trials as pandas frames: one row per trial (`trials_frame`), the per-epoch
history of a metric in long form (`score_history`), and completed against pruned trials
(`outcome_summary`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from robustmsa.analysis.names import (
    EPOCHS_TAG,
    OBJECTIVE,
    OUTCOME_TAG,
    ROLE_TAG,
    SEARCH_METRIC,
    TRIAL_TAG,
)
from robustmsa.analysis.studies import search_space, study_runs
from robustmsa.config import ParamSpace

TRIAL_COLUMNS = (
    "trial_id",
    "run_id",
    "run_name",
    "role",
    "outcome",
    "status",
    "score",
    "epochs",
    "start",
    "end",
    "duration_s",
)
HISTORY_COLUMNS = (
    "trial_id",
    "run_id",
    "role",
    "outcome",
    "metric",
    "step",
    "value",
    "time",
    "elapsed_s",
)


def _param_value(text: str | None, p: ParamSpace) -> Any:
    """A logged param (a string) as the value the trial drew: int, float or the choice."""
    if text is None:
        return None
    try:
        if p.type == "int":
            return int(float(text))
        if p.type == "float":
            return float(text)
    except ValueError:
        return text
    for choice in p.choices or []:
        if str(choice) == text:
            return choice
    return text


def _time(ms: int | None) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC") if ms else pd.NaT


def _epochs(run: Run) -> float:
    tag = run.data.tags.get(EPOCHS_TAG)
    if tag is not None:
        try:
            return int(tag)
        except ValueError:
            pass
    epoch = run.data.metrics.get("epoch")
    return int(epoch) if epoch is not None else math.nan


def trials_frame(
    client: MlflowClient,
    parent: Run,
    runs: Sequence[Run] | None = None,
    *,
    include_roles: bool = False,
) -> pd.DataFrame:
    """One row per trial of the study ``parent`` (`study_runs`, or ``runs``), by start time.

    Columns `TRIAL_COLUMNS` then one per searched parameter (`search_space`, named by its
    config key path, e.g. ``model.params.num_experts``, typed as drawn): ``trial_id`` (Tune's),
    ``run_id``, ``run_name``, ``role`` (None for a searched trial), ``outcome`` (``completed`` /
    ``pruned``, None while running), ``status`` (MLflow's), ``score`` (the trial's best
    validation spectrum score, ``best/val/spectrum_score``; NaN before its first epoch),
    ``epochs`` (epochs run), ``start`` / ``end`` (UTC timestamps), ``duration_s``.

    Only searched trials (no ``robustmsa.role``) unless ``include_roles``: then the reference
    model and the models of a comparison too. Shape ``(trials, 11 + parameters)``."""
    runs = study_runs(client, parent) if runs is None else runs
    space = search_space(parent)
    rows = []
    for run in runs:
        tags = run.data.tags
        if TRIAL_TAG not in tags or (ROLE_TAG in tags and not include_roles):
            continue
        info = run.info
        start, end = _time(info.start_time), _time(info.end_time)
        row = {
            "trial_id": tags[TRIAL_TAG],
            "run_id": info.run_id,
            "run_name": info.run_name,
            "role": tags.get(ROLE_TAG),
            "outcome": tags.get(OUTCOME_TAG),
            "status": info.status,
            "score": run.data.metrics.get(SEARCH_METRIC, math.nan),
            "epochs": _epochs(run),
            "start": start,
            "end": end,
            "duration_s": (end - start).total_seconds() if info.end_time else math.nan,
        }
        for p in space:
            row[p.name] = _param_value(run.data.params.get(p.name), p)
        rows.append(row)
    columns = [*TRIAL_COLUMNS, *(p.name for p in space)]
    return pd.DataFrame(rows, columns=columns)


def score_history(
    client: MlflowClient,
    trials: pd.DataFrame,
    metric: str = OBJECTIVE,
    *,
    since: int | None = None,
) -> pd.DataFrame:
    """The per-epoch history of ``metric`` (``val/spectrum_score`` by default, any per-epoch
    metric such as ``train/loss``) of every run of ``trials`` (`trials_frame`), in long form.

    Columns `HISTORY_COLUMNS`: the run's ``trial_id``, ``run_id``, ``role``, ``outcome``, the
    ``metric``, its ``step`` (the epoch), ``value``, ``time`` (UTC timestamp of the log) and
    ``elapsed_s`` (seconds since ``since``, epoch milliseconds: the parent's start time for a
    study's clock; else the first start among ``trials``). One row per logged point, sorted
    by time."""
    if since is None:
        starts = [s for s in trials["start"] if not pd.isna(s)] if len(trials) else []
        since = int(min(starts).timestamp() * 1000) if starts else 0
    rows = []
    for t in trials.itertuples(index=False):
        for m in client.get_metric_history(t.run_id, metric):
            rows.append(
                {
                    "trial_id": t.trial_id,
                    "run_id": t.run_id,
                    "role": t.role,
                    "outcome": t.outcome,
                    "metric": metric,
                    "step": int(m.step),
                    "value": float(m.value),
                    "time": _time(m.timestamp),
                    "elapsed_s": (m.timestamp - since) / 1000.0,
                }
            )
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return frame.sort_values(["time", "trial_id", "step"], ignore_index=True)


def outcome_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed against pruned trials: per outcome, how many trials, their epochs (mean,
    total), best and median score and mean duration. Index: outcome (``running`` for a trial
    without one); shape ``(outcomes, 6)``."""
    frame = trials.assign(outcome=trials["outcome"].fillna("running"))
    grouped = frame.groupby("outcome", sort=True)
    return pd.DataFrame(
        {
            "trials": grouped.size(),
            "mean_epochs": grouped["epochs"].mean(),
            "total_epochs": grouped["epochs"].sum(),
            "best_score": grouped["score"].min(),
            "median_score": grouped["score"].median(),
            "mean_duration_s": grouped["duration_s"].mean(),
        }
    )
