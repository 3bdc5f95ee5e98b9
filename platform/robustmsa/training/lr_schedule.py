"""The learning rate over a training stage (``training.lr_schedule``).

``constant`` (the default) keeps ``training.lr`` for every step. ``cosine`` anneals it from
``training.lr`` towards 0 by half a cosine over the stage's steps, step by step (SGDR without
restarts: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR
2017, https://arxiv.org/abs/1608.03983). Why it is offered: at a constant rate the validation
spectrum score of the last epochs moves by about 0.03 from one epoch to the next on the
``mosi`` preset, as much as the spread between good configurations (benchmarks/README.md,
P5), so a search partly ranks luck; a rate that shrinks to 0 lets the last epochs settle.

The span is the stage's planned epochs (all of ``training.epochs`` for a single-stage model;
`robustmsa.training.loop.plan_stages` otherwise), not the epochs a trial ends up running: a
trial that early stopping or ASHA ends sooner ends at a higher rate, as it would under any
schedule fixed in advance. The rate is a pure function of where a step stands in its stage, so
a resumed run sets exactly the rates the uninterrupted one did, with no scheduler state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, progress: float) -> float:
    """Multiplier of ``training.lr`` for a step at ``progress`` (the share of the stage's steps
    done before it, in [0, 1)): 1 for ``constant``, ``(1 + cos(pi * progress)) / 2`` for
    ``cosine``. ValueError names an unknown schedule or a progress outside [0, 1]."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule: must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if not 0.0 <= progress <= 1.0:  # also refuses NaN
        raise ValueError(f"lr schedule progress: must be in [0, 1], got {progress}")
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_rates(
    schedule: str, lr: float, epoch_in_stage: int, stage_epochs: int
) -> Callable[[float], float] | None:
    """The rate of each step of one epoch, as a function of the share of the epoch done before
    the step (in [0, 1)); ``epoch_in_stage`` counts from 1. None for ``constant``: the loop
    then leaves the optimizer's rate alone, so the default path is the one without schedules."""
    if schedule == "constant":
        return None
    if not 1 <= epoch_in_stage <= stage_epochs:
        raise ValueError(f"epoch {epoch_in_stage} is outside its stage's {stage_epochs} epochs")

    def rate(fraction: float) -> float:
        return lr * lr_factor(schedule, (epoch_in_stage - 1 + fraction) / stage_epochs)

    return rate
