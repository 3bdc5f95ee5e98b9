"""An in-memory Optuna study rebuilt from a study's trials (the product does not persist one),
and Optuna's parameter importances over it.

Optuna is imported when first called, not by importing this module."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from robustmsa.analysis.names import COMPLETED, PRUNED
from robustmsa.config import ParamSpace

if TYPE_CHECKING:
    import optuna


def distributions(space: Sequence[ParamSpace], params: Mapping[str, Any]) -> dict[str, Any]:
    """The Optuna distributions one trial drew ``params`` from: a bound naming an earlier
    parameter (``top_k`` up to ``num_experts``) takes that trial's value, as
    `robustmsa.search.space.suggest` does. Parameters missing from ``params`` are left out."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for p in space:
        if params.get(p.name) is None:
            continue
        high = params.get(p.high) if isinstance(p.high, str) else p.high
        if p.type == "categorical":
            out[p.name] = CategoricalDistribution(p.choices)
        elif p.type == "int":
            out[p.name] = IntDistribution(int(p.low), int(high), log=p.log)
        else:
            out[p.name] = FloatDistribution(float(p.low), float(high), log=p.log)
    return out


def optuna_study(trials: pd.DataFrame, space: Sequence[ParamSpace]) -> optuna.Study:
    """An in-memory Optuna study (direction minimize) rebuilt from ``trials`` (`trials_frame`)
    over ``space`` (`search_space`): a completed trial with a score becomes a COMPLETE Optuna
    trial of that value, a pruned one a PRUNED trial (its score as its last intermediate
    value), anything else (running, failed, no score) a FAIL trial; each with the trial id and
    run id as user attributes. The study's TPE state is not restored, only its trials: enough
    for Optuna's importance evaluators and visualisations."""
    import optuna
    from optuna.trial import TrialState

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created ..."
    try:
        study = optuna.create_study(direction="minimize", study_name="rebuilt from MLflow")
    finally:
        optuna.logging.set_verbosity(verbosity)
    names = [p.name for p in space]
    for t in trials.to_dict("records"):
        params = {n: _plain(t[n]) for n in names if n in t and not _missing(t[n])}
        dists = distributions(space, params)
        params = {n: v for n, v in params.items() if n in dists}
        score = t.get("score")
        attrs = {"trial_id": t["trial_id"], "run_id": t["run_id"]}
        if t.get("outcome") == COMPLETED and not _missing(score):
            trial = optuna.trial.create_trial(
                params=params, distributions=dists, value=float(score), user_attrs=attrs
            )
        elif t.get("outcome") == PRUNED:
            steps = {} if _missing(score) else {int(t.get("epochs") or 0): float(score)}
            trial = optuna.trial.create_trial(
                state=TrialState.PRUNED,
                params=params,
                distributions=dists,
                intermediate_values=steps,
                user_attrs=attrs,
            )
        else:
            trial = optuna.trial.create_trial(
                state=TrialState.FAIL, params=params, distributions=dists, user_attrs=attrs
            )
        study.add_trial(trial)
    return study


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """numpy scalars (from a DataFrame) as Python ones: Optuna checks types."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Importances:
    """Parameter importances of a rebuilt study (`param_importances`).

    ``values``: importance per parameter name, non-negative, summing to 1, largest first;
    empty when none could be computed. ``completed``: the completed trials they rest on.
    ``notes``: why they may mean little (too few trials, Optuna's own warnings)."""

    values: pd.Series
    completed: int
    notes: tuple[str, ...]


def param_importances(study: optuna.Study) -> Importances:
    """Optuna's parameter importances of ``study`` (`optuna_study`) with its default
    evaluator, PED-ANOVA (no scikit-learn needed; it also rates a parameter whose range
    depends on another, such as ``top_k``). Never raises for a small study: with no completed
    trial the values are empty, with one they are equal by construction, and either case is
    said in ``notes``."""
    import optuna
    from optuna.trial import TrialState

    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if completed == 0:
        return Importances(
            pd.Series(dtype=float, name="importance"),
            0,
            ("no completed trial: importances need at least two completed trials",),
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = optuna.importance.get_param_importances(study)
    if completed < 2:  # Optuna says "too small to compute importances": ours says why
        notes = [
            "1 completed trial: every parameter gets the same importance; importances need "
            "at least two completed trials, and mean little with fewer than about ten"
        ]
    else:
        notes = [str(w.message) for w in caught]
    series = pd.Series(values, dtype=float, name="importance")
    series.index.name = "parameter"
    return Importances(series, completed, tuple(dict.fromkeys(notes)))
