"""The study's search space as an Optuna define-by-run function.

Parameters are named by their config key path (``model.params.num_experts``), so a sampled
point is applied to the base config with the same override mechanism as ``--set``. A bound may
name an earlier parameter (``top_k`` up to the sampled ``num_experts``), which a static Tune
space cannot express.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from robustmsa.config import ParamSpace


def suggest(trial: Any, space: list[ParamSpace]) -> None:
    """Draw every parameter of ``space`` from the Optuna ``trial`` (define-by-run)."""
    values: dict[str, Any] = {}
    for p in space:
        high = values[p.high] if isinstance(p.high, str) else p.high
        if p.type == "categorical":
            value = trial.suggest_categorical(p.name, p.choices)
        elif p.type == "int":
            value = trial.suggest_int(p.name, int(p.low), int(high), log=p.log)
        else:
            value = trial.suggest_float(p.name, float(p.low), float(high), log=p.log)
        values[p.name] = value


def define_by_run(space: list[ParamSpace]):
    """The define-by-run function ``OptunaSearch(space=...)`` expects."""
    return partial(suggest, space=space)
