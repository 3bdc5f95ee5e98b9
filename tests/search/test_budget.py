"""A search's trial-epoch budget: the stopper's count, and a real study that spends it."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from pyarrow.fs import LocalFileSystem
from ray import tune
from robustmsa.search.budget import TrialEpochBudget
from robustmsa.search.kinds.search import TRIAL_EPOCHS
from robustmsa.search.study import run_study
from robustmsa.search.trial import ROLE_TAG, reported_checkpoint
from search_smoke import smoke_config


def test_the_budget_counts_each_trials_highest_epoch_once():
    budget = TrialEpochBudget(5)
    assert not budget("a", {"training_iteration": 1})
    budget("a", {"training_iteration": 2})
    budget("a", {"training_iteration": 2})  # the same epoch again (a final, duplicate result)
    budget("b", {"training_iteration": 2})
    assert budget.spent == 4 and not budget.stop_all()
    budget("c", {"training_iteration": 1})
    assert budget.spent == 5 and budget.stop_all()


def test_a_resumed_budget_starts_from_what_its_trials_trained():
    budget = TrialEpochBudget.seeded(
        6, [("a", {"training_iteration": 4}), ("b", {}), ("c", {"training_iteration": 1})]
    )
    assert budget.spent == 5 and not budget.stop_all()
    budget("c", {"training_iteration": 2})  # c continues from its checkpoint
    assert budget.spent == 6 and budget.stop_all()


def test_a_budget_below_one_epoch_is_refused():
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        TrialEpochBudget(0)


def test_the_checkpoint_a_trial_reported_is_found_where_tune_never_registered_it(tmp_path):
    for name in ("checkpoint_000000", "checkpoint_000001"):
        (tmp_path / name).mkdir()
    registered = tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000000"))
    fs, where = LocalFileSystem(), str(tmp_path)

    def found(checkpoint, metrics):
        return reported_checkpoint(checkpoint, metrics, fs, where)

    newer = found(registered, {"checkpoint_dir_name": "checkpoint_000001"})
    assert newer.path == str(tmp_path / "checkpoint_000001")
    assert found(None, {"checkpoint_dir_name": "checkpoint_000001"}).path == newer.path
    # Tune's own when it is the reported one, when nothing is reported or nothing is there.
    assert found(registered, {"checkpoint_dir_name": "checkpoint_000000"}) is registered
    assert found(registered, {}) is registered
    assert found(registered, {"checkpoint_dir_name": "checkpoint_000002"}) is registered
    assert found("/a/train/path", {"checkpoint_dir_name": "checkpoint_000001"}) == "/a/train/path"


def test_a_study_stops_when_its_trials_have_spent_the_budget(tmp_path, local_ray):
    """Six trials of three epochs would train up to 18 epochs; the budget of 7 ends the study
    first, and the epochs each run reports are those its trial trained. It runs with the median
    stopping rule (the suite's other studies use ASHA), so that scheduler runs in a real study;
    whether it stops a trial on tiny data is left open, and any trial stopped early, by the rule
    or the budget, must end as a pruned run."""
    budget = 7
    config = smoke_config(
        tmp_path,
        **{"search.num_samples": 6, "search.trial_epoch_budget": budget,
           "search.scheduler": "median"},
    )  # fmt: skip
    result = run_study(config, root=tmp_path)
    trained = [t.epochs for t in result.trials if t.epochs]
    # Concurrent trials report independently: one epoch over per other running trial at most.
    assert budget <= sum(trained) <= budget + config.study.max_concurrent - 1
    assert sum(trained) < 6 * 3

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics[TRIAL_EPOCHS] == sum(trained)
    runs = client.search_runs(
        [result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    by_trial = {t.run_id: t for t in result.trials}
    for run in runs:
        assert ROLE_TAG not in run.data.tags  # no reference: every child is a trial
        tags, row = run.data.tags, by_trial[run.info.run_id]
        if row.epochs:  # stopped after some epochs: its last reported checkpoint is logged
            assert run.info.status == "FINISHED"
            assert tags["robustmsa.outcome"] in {"completed", "pruned"}
            assert int(tags["robustmsa.epochs_run"]) == row.epochs
        else:  # stopped with the study before its first epoch
            assert (run.info.status, tags["robustmsa.outcome"]) == ("KILLED", "stopped")

    # Restored (as `robustmsa resume` restores it), the budget counts what the trials trained.
    from robustmsa.search.tuner import build_tuner

    restored = build_tuner(
        f"robustmsa_trial_{result.parent_run_id[:8]}",  # registered by the study above
        name=f"{config.name}-{result.parent_run_id[:8]}",
        storage_path=result.storage_path,
        callbacks=[],
        max_concurrent=2,
        reuse_actors=True,
        trial_prefix="trial",
        trial_epoch_budget=budget,
    )
    stop = restored._local_tuner.get_run_config().stop
    assert stop.spent == sum(trained) and stop.stop_all()
