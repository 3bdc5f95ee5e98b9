"""The Tune scheduler that stops a search's trials early (``search.scheduler``).

- ``asha``: ASHA's rungs at ``grace_period`` x ``reduction_factor``^k epochs; at each, a trial
  below the best 1/``reduction_factor`` of the trials recorded there stops.
- ``median``: the median stopping rule (Golovin et al. 2017, "Google Vizier"): from
  ``grace_period`` epochs on, a trial whose best objective so far is worse than the median of
  the other trials' running means up to that epoch stops. Where ASHA stops a fixed share of the
  trials at every rung, whatever their scores, this rule stops the trials that are clearly
  behind and lets the rest run: when the search proposes many points of about the same
  quality, ASHA spends their early epochs and drops most of them on noise.
- ``none``: every trial runs all its epochs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler

if TYPE_CHECKING:
    from robustmsa.search.kinds.search import SearchSection

# One other trial at an epoch is enough to compare with: a trial far behind (a rate too low to
# learn in the first epochs) stops from the second trial on, not after the third (Tune's
# default of 3 would let the whole random start-up run to the end).
MEDIAN_MIN_OTHERS = 1


class MedianStopping(MedianStoppingRule):
    """Tune's median stopping rule that never pauses a trial.

    With too few others to compare with, Tune's rule pauses the trial when another waits to
    start, and resumes it later from its checkpoint; our trials checkpoint every epoch and run
    at most ``study.max_concurrent`` at once, so a pause would only cost a stop and a restore.
    Here such a trial simply continues.
    """

    def _on_insufficient_samples(self, tune_controller, trial, time) -> str:
        return TrialScheduler.CONTINUE


def trial_scheduler(s: SearchSection, epochs: int) -> TrialScheduler | None:
    """The scheduler of ``s.scheduler`` for trials of ``epochs`` epochs (None: ``none``)."""
    grace = min(s.grace_period, epochs)
    if s.scheduler == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=epochs,
            grace_period=grace,
            reduction_factor=s.reduction_factor,
        )
    if s.scheduler == "median":
        return MedianStopping(
            time_attr="training_iteration",
            grace_period=grace,
            min_samples_required=MEDIAN_MIN_OTHERS,
        )
    return None
