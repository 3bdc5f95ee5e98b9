"""A study's compute budget in trial-epochs: a Tune `Stopper` that ends the experiment once its
trials together have trained ``budget`` epochs.

ASHA stops poor trials early; with a fixed number of trials the epochs it saves are simply not
spent. A trial-epoch budget (``search.trial_epoch_budget``) spends them on more trials instead:
the search keeps proposing (up to ``search.num_samples``) until the epochs reported reach the
budget, then every running trial is stopped where it stands and no new one starts. The unit is
the epoch because every trial reports once per epoch (`robustmsa.training.reporting`); it is
reproducible where a time budget (Tune's ``time_budget_s``) is not.

A trial's epochs are counted as the highest ``training_iteration`` it reported, so a result
seen twice (a trial restored from its checkpoint repeats no epoch, but the count must not rely
on it) is counted once. A resumed study seeds the count with what its restored trials had
trained (`TrialEpochBudget.seeded`): the budget covers the study, not the process.

Concurrent trials report independently: when the budget is reached, a trial's epoch already in
flight may still arrive before its stop, so a study can end up to ``study.max_concurrent - 1``
epochs over its budget; the count logged on the parent (``search/trial_epochs``) says what was
spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ray.tune.stopper import Stopper

ITERATION = "training_iteration"  # Tune's count of a trial's reports: one per epoch here


class TrialEpochBudget(Stopper):
    """Stops the whole experiment once the trials' epochs sum to ``budget`` (>= 1)."""

    def __init__(self, budget: int, trained: Mapping[str, int] | None = None):
        if budget < 1:
            raise ValueError(f"trial-epoch budget: must be >= 1, got {budget}")
        self.budget = budget
        self._epochs: dict[str, int] = dict(trained or {})

    @classmethod
    def seeded(cls, budget: int, last_results: Iterable[tuple[str, Mapping]]) -> TrialEpochBudget:
        """A budget that counts what restored trials already trained: ``last_results`` is
        ``(trial id, last reported result)`` for each (a result without an iteration counts 0).
        """
        return cls(budget, {tid: int(r.get(ITERATION, 0) or 0) for tid, r in last_results})

    @property
    def spent(self) -> int:
        """Trial-epochs counted so far."""
        return sum(self._epochs.values())

    def __call__(self, trial_id: str, result: dict) -> bool:
        epochs = int(result.get(ITERATION, 0) or 0)
        self._epochs[trial_id] = max(self._epochs.get(trial_id, 0), epochs)
        return False  # no single trial is stopped by the budget; stop_all ends them all

    def stop_all(self) -> bool:
        return self.spent >= self.budget
