"""`TrialRunFinisher` finishes each trial's run in a Ray task, not in Tune's driver loop.

The trial handed to the callback holds what Tune's `Trial` gives it (id, last checkpoint, last
result); the checkpoint is a real one of the tiny QA-MoE, the runs live in a real sqlite MLflow
store and the tasks run on the session's local Ray.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from mlflow.tracking import MlflowClient
from pyarrow.fs import LocalFileSystem
from ray import tune
from robustmsa.config import from_dict
from robustmsa.errors import RobustMSAError
from robustmsa.evaluation.logged import TEST_TAG
from robustmsa.search.trial import FinishingTasks, TrialRunFinisher
from robustmsa.tracking.runs import TRIAL_TAG
from robustmsa.training.checkpoint import (
    BEST_MODEL_FILE,
    CONFIG_FILE,
    ROWS_FILE,
    STATE_FILE,
    load_state,
)
from tiny_training import tiny_config, train


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tmp_path_factory):
    """The last checkpoint of a completed 1-epoch run (so the finisher evaluates test), with
    a short test report (the full one is the study tests' business)."""
    config = from_dict(
        tiny_config(tiny_dataset, epochs=1).to_dict(),
        {"spectrum.report_protocols": ["clean", "missing@all"]},
    )
    _, reporter = train(config, tmp_path_factory.mktemp("ckpt"))
    return reporter.checkpoints[-1]


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("finisher", str(tmp_path / "artifacts"))
    return uri, client, experiment


def _trial(client, experiment, trial_id, checkpoint_dir):
    """A RUNNING child run tagged with the trial id, and the trial as the callback sees it."""
    run_id = client.create_run(experiment, tags={TRIAL_TAG: trial_id}).info.run_id
    trial = SimpleNamespace(
        trial_id=trial_id,
        checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)),
        last_result={},
        # Where Tune keeps the trial's files (a reported checkpoint Tune never registered
        # would be read from there: `robustmsa.search.trial.reported_checkpoint`).
        storage=SimpleNamespace(
            storage_filesystem=LocalFileSystem(), trial_fs_path=str(Path(checkpoint_dir).parent)
        ),
    )
    return run_id, trial


@pytest.fixture
def all_cpus_held(local_ray):
    """Actors holding every free CPU of the local Ray until the test releases them."""

    @local_ray.remote(num_cpus=1)
    class Holder:
        def ready(self):
            return True

    free = int(local_ray.available_resources().get("CPU", 0))
    holders = [Holder.remote() for _ in range(free)]
    local_ray.get([h.ready.remote() for h in holders])

    def release():
        for h in holders:
            local_ray.kill(h)

    yield release
    release()


def test_the_callback_returns_before_the_run_is_finished(checkpoint, store, all_cpus_held):
    """With every CPU held, the finishing task cannot start: the callback still returns (Tune
    would go on scheduling) and the run stays RUNNING until the experiment's end waits."""
    uri, client, experiment = store
    run_id, trial = _trial(client, experiment, "t1", checkpoint)
    finisher = TrialRunFinisher(uri, experiment, evaluate_test=True)
    finisher.on_trial_complete(0, [trial], trial)
    assert client.get_run(run_id).info.status == "RUNNING"
    all_cpus_held()
    finisher.on_experiment_end([trial])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["robustmsa.outcome"] == "completed"
    assert TEST_TAG in run.data.tags
    assert "test/spectrum/clean/all/mae" in run.data.metrics
    assert "spectrum/clean/all/mae" in run.data.metrics


def test_without_a_test_evaluation_the_finishing_holds_no_cpu(checkpoint, store, all_cpus_held):
    """The default policy: a completed trial's finishing only logs what its checkpoint holds
    (its best epoch's validation spectrum, the checkpoint files), so it runs while every CPU
    is held by training, and it evaluates nothing on test and draws no figure."""
    uri, client, experiment = store
    run_id, trial = _trial(client, experiment, "t1", checkpoint)
    finisher = TrialRunFinisher(uri, experiment, resources={"cpu": 1})
    finisher.on_trial_complete(0, [trial], trial)
    ((_, _, task),) = finisher.tasks._pending
    # Runs although no CPU is free (a task that needed one would time out here, not hang).
    ready, _ = ray.wait([task], timeout=120)
    assert ready
    finisher.on_experiment_end([trial])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["robustmsa.outcome"] == "completed"
    assert "spectrum/clean/all/mae" in run.data.metrics
    assert TEST_TAG not in run.data.tags
    assert not any(k.startswith(("test/", "oracle/")) for k in run.data.metrics)
    assert client.list_artifacts(run_id, "figures") == []
    logged = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
    assert logged == {
        f"checkpoint/{n}" for n in (BEST_MODEL_FILE, CONFIG_FILE, STATE_FILE, ROWS_FILE)
    }


def test_a_finish_waits_for_the_reference_trained_beside_the_search(checkpoint, store, local_ray):
    """The reference trains beside the search: a trial that completes before its curves are
    there is held (its run stays RUNNING, no task yet) and finished at Tune's next step after
    they arrive, with its effective robustness against them."""
    uri, client, experiment = store
    run_id, trial = _trial(client, experiment, "t1", checkpoint)
    pending = Future()
    finisher = TrialRunFinisher(uri, experiment, reference_rows=pending)
    finisher.on_trial_complete(0, [trial], trial)
    finisher.on_step(1, [trial])
    assert finisher.tasks._pending == []
    assert client.get_run(run_id).info.status == "RUNNING"
    pending.set_result(load_state(checkpoint)[1])  # the reference's validation rows
    finisher.on_step(2, [trial])
    assert len(finisher.tasks._pending) == 1
    finisher.on_experiment_end([trial])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # Against itself: no effective change, but every curve's summary is there.
    assert run.data.metrics["robust/missing/all/effective_mae"] == pytest.approx(0.0)


def test_a_failed_finish_marks_its_run_failed_and_names_it(checkpoint, store, tmp_path, local_ray):
    """Fault injection: one trial's best weights are not a torch file. Its run ends FAILED
    with the cause, the experiment's end raises naming it, and the other trial finishes."""
    uri, client, experiment = store
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / BEST_MODEL_FILE).write_bytes(b"not a checkpoint")
    good_id, good = _trial(client, experiment, "good", checkpoint)
    bad_id, bad = _trial(client, experiment, "bad", broken)
    finisher = TrialRunFinisher(uri, experiment, evaluate_test=True)
    for trial in (bad, good):
        finisher.on_trial_complete(0, [bad, good], trial)
    with pytest.raises(RobustMSAError, match=rf"finishing trial runs failed: .*run {bad_id}"):
        finisher.on_experiment_end([bad, good])
    failed = client.get_run(bad_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["robustmsa.outcome"] == "error"
    assert f"{BEST_MODEL_FILE}: not a readable weights file" in failed.data.tags["robustmsa.error"]
    assert client.get_run(good_id).info.status == "FINISHED"


def test_a_shared_task_list_is_awaited_by_its_owner(checkpoint, store, all_cpus_held):
    """With the study's `FinishingTasks`, the end of one experiment does not wait (the next
    one starts); the study's own `wait` ends the run."""
    uri, client, experiment = store
    run_id, trial = _trial(client, experiment, "t1", checkpoint)
    tasks = FinishingTasks(uri)
    finisher = TrialRunFinisher(uri, experiment, tasks=tasks, evaluate_test=True)
    finisher.on_trial_complete(0, [trial], trial)
    finisher.on_experiment_end([trial])
    assert client.get_run(run_id).info.status == "RUNNING"
    all_cpus_held()
    tasks.wait()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert TEST_TAG in run.data.tags


def test_cancelled_tasks_leave_their_runs_to_the_study(checkpoint, store, all_cpus_held):
    """A failing study cancels what it has not awaited: the task never runs (its result is a
    cancellation) and the run is left RUNNING for the study's clean-up to end."""
    import ray

    uri, client, experiment = store
    run_id, trial = _trial(client, experiment, "t1", checkpoint)
    tasks = FinishingTasks(uri)
    TrialRunFinisher(uri, experiment, tasks=tasks, evaluate_test=True).on_trial_complete(
        0, [trial], trial
    )
    ((_, _, task),) = tasks._pending
    tasks.cancel()
    all_cpus_held()
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(task, timeout=60)
    tasks.wait()  # nothing left to wait for
    assert client.get_run(run_id).info.status == "RUNNING"
