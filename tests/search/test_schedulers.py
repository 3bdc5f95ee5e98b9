"""The early-stopping schedulers of ``search.scheduler`` (robustmsa.search.schedulers), driven
with Tune's real scheduler code on hand-made results."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler
from robustmsa.config import load
from robustmsa.errors import ConfigError
from robustmsa.search.schedulers import MEDIAN_MIN_OTHERS, MedianStopping, trial_scheduler
from search_smoke import STUDY_YAML

METRIC = "best/val/spectrum_score"


def section(*overrides: str):
    return load(STUDY_YAML, list(overrides)).kind_section


class Controller:
    """What the median rule asks of Tune's controller: the live trials and their states."""

    def __init__(self, waiting: int = 0):
        self.live = [SimpleNamespace(status=Trial.PENDING) for _ in range(waiting)]

    def get_live_trials(self):
        return self.live


class StubTrial:
    """A hashable stand-in for a Tune trial: the rule keys its results by trial."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def median_rule(cls=MedianStopping, grace=2):
    rule = cls(time_attr="training_iteration", grace_period=grace,
               min_samples_required=MEDIAN_MIN_OTHERS)  # fmt: skip
    rule.set_search_properties(METRIC, "min")
    return rule


def report(rule, controller, trial, scores: list[float]) -> str:
    """Feed ``trial``'s epochs 1..n to ``rule``; the decision on the last one."""
    for epoch, score in enumerate(scores, start=1):
        decision = rule.on_trial_result(
            controller, trial, {"training_iteration": epoch, METRIC: score}
        )
        if decision != TrialScheduler.CONTINUE:
            return decision
    return decision


def test_scheduler_follows_the_config():
    asha = trial_scheduler(section(), epochs=8)
    assert isinstance(asha, ASHAScheduler)
    assert isinstance(trial_scheduler(section("search.scheduler=median"), 8), MedianStopping)
    assert trial_scheduler(section("search.scheduler=none"), 8) is None
    with pytest.raises(ConfigError, match=r"search\.scheduler: expected one of"):
        section("search.scheduler=hyperband")


def test_median_rule_stops_a_trial_behind_the_others_and_keeps_one_ahead():
    rule, controller = median_rule(), Controller()
    for i, final in enumerate([0.80, 0.82, 0.84]):
        report(rule, controller, StubTrial(f"done{i}"), [1.3, 1.1, 0.95, final])
    # The others' running means from epoch 2 on: about 1.1 at epoch 2, 1.0 at epoch 3.
    assert report(rule, controller, StubTrial("behind"), [1.32, 1.31]) == TrialScheduler.STOP
    assert report(rule, controller, StubTrial("ahead"), [1.2, 1.0, 0.9, 0.81]) == (
        TrialScheduler.CONTINUE
    )
    # Before the grace period nothing is compared.
    assert report(rule, controller, StubTrial("young"), [9.9]) == TrialScheduler.CONTINUE


def test_median_rule_never_pauses_a_trial_without_enough_others():
    """Tune's rule pauses it when another trial waits to start; ours lets it run on."""
    waiting = Controller(waiting=1)
    tunes, ours = median_rule(MedianStoppingRule), median_rule()
    # The first trial past its grace period has no other to compare with.
    assert report(tunes, waiting, StubTrial("first"), [1.3, 1.1]) == TrialScheduler.PAUSE
    assert report(ours, waiting, StubTrial("first"), [1.3, 1.1]) == TrialScheduler.CONTINUE


def test_median_rule_stops_the_second_trial_when_the_first_is_far_ahead():
    """One other trial is enough (`MEDIAN_MIN_OTHERS`): a rate too low to learn shows by the
    second epoch, and the random start-up need not run such trials to the end."""
    rule, controller = median_rule(), Controller()
    report(rule, controller, StubTrial("first"), [1.2, 0.95, 0.88])
    assert report(rule, controller, StubTrial("slow"), [1.32, 1.31]) == TrialScheduler.STOP
    assert report(rule, controller, StubTrial("close"), [1.2, 0.97, 0.9]) == TrialScheduler.CONTINUE
