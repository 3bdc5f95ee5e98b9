"""Continuing a run from its last checkpoint gives the numbers of the run that never stopped.

What a restarted trial (a lost worker, an interrupted and resumed study) relies on: weights,
optimizer state, every random generator, the best epoch and the patience count come back from
the checkpoint (`robustmsa.training.checkpoint.ResumePoint`)."""

from __future__ import annotations

import pytest
import torch
from robustmsa.errors import RobustMSAError
from robustmsa.training.checkpoint import RESUME_FILE, load_resume_point, load_weights
from robustmsa.training.loop import TIMING_PREFIX, run_training
from robustmsa.training.reporting import LocalReporter
from tiny_training import tiny_config, tiny_promma_config


def results(history: list[dict]) -> list[dict]:
    """The reports without their wall-clock measurements."""
    return [{k: v for k, v in h.items() if not k.startswith(TIMING_PREFIX)} for h in history]


def stopped_then_resumed(config, tmp_path, stop_after: int, whole=None):
    """The uninterrupted run's outcome and reporter (``whole``: those of an earlier call, not
    trained again), and the reports of a run that stopped after epoch ``stop_after`` (its
    checkpoint kept) then continued from that checkpoint."""
    if whole is None:
        reporter = LocalReporter(checkpoint_root=tmp_path / "whole")
        whole = (run_training(config, reporter), reporter)
    outcome, whole = whole
    first = LocalReporter(checkpoint_root=tmp_path / "first")

    class StopAfter(LocalReporter):
        def report(self, metrics, checkpoint_dir):
            first.report(metrics, checkpoint_dir)
            if metrics["epoch"] == stop_after:
                raise KeyboardInterrupt  # the worker is gone after this checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_training(config, StopAfter())
    rest = LocalReporter(checkpoint_root=tmp_path / "rest")
    resumed = run_training(config, rest, resume=load_resume_point(first.checkpoints[-1]))
    return outcome, whole, first, resumed, rest


@pytest.mark.parametrize(
    "training",
    [{}, {"weight_average": 0.9}, {"lr_schedule": "cosine"}],
    ids=["raw", "averaged", "cosine"],
)
def test_resumed_run_reports_what_the_uninterrupted_run_did(tiny_dataset, tmp_path, training):
    # Averaged: the moving average of the weights travels in resume.pt and goes on as it was.
    # Cosine: the rates come from each step's place in the run, not from a saved scheduler.
    config = tiny_config(tiny_dataset, epochs=4, patience=10, **training)
    outcome, whole, first, resumed, rest = stopped_then_resumed(config, tmp_path, 2)
    assert [h["epoch"] for h in rest.history] == [3, 4]
    assert results(first.history + rest.history) == results(whole.history)
    assert (resumed.best_epoch, resumed.best_score) == (outcome.best_epoch, outcome.best_score)
    assert resumed.rows == outcome.rows
    for name, tensor in load_weights(whole.checkpoints[-1], best=False).items():
        assert torch.equal(tensor, load_weights(rest.checkpoints[-1], best=False)[name]), name


def test_resume_keeps_the_patience_count(tiny_dataset, tmp_path):
    # Weights that cannot move: epoch 1 stays best; patience 3 stops after epoch 4. Stopped
    # after epoch 2 (one bad epoch counted), the resumed run must stop after epoch 4 too.
    config = tiny_config(tiny_dataset, epochs=10, patience=3, lr=1e-30)
    outcome, whole, _, resumed, rest = stopped_then_resumed(config, tmp_path, 2)
    assert [h["epoch"] for h in whole.history] == [1, 2, 3, 4]
    assert [h["epoch"] for h in rest.history] == [3, 4]
    assert resumed.stopped_early and resumed.epochs_run == outcome.epochs_run == 4


def test_resume_of_a_finished_run_trains_nothing(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, epochs=2)
    reporter = LocalReporter(checkpoint_root=tmp_path)
    outcome = run_training(config, reporter)
    again = LocalReporter()
    resumed = run_training(config, again, resume=load_resume_point(reporter.checkpoints[-1]))
    assert again.history == []
    assert (resumed.best_epoch, resumed.best_score, resumed.epochs_run) == (
        outcome.best_epoch,
        outcome.best_score,
        outcome.epochs_run,
    )


def test_resume_across_training_stages(tiny_dataset, tmp_path):
    """ProMMA trains in stages, each with its own optimizer: stopped inside the first stage
    and at its last epoch, the resumed run matches the uninterrupted one."""
    # The moving average is restarted per stage and carried through the resume.
    config = tiny_promma_config(tiny_dataset, weight_average=0.9)
    uninterrupted = None
    for stop_after in (1, 2):
        where = tmp_path / f"stop{stop_after}"
        outcome, whole, first, _, rest = stopped_then_resumed(
            config, where, stop_after, uninterrupted
        )
        uninterrupted = (outcome, whole)
        assert results(first.history + rest.history) == results(whole.history), stop_after


def test_a_checkpoint_without_its_resume_state_is_refused_by_name(tiny_dataset, tmp_path):
    reporter = LocalReporter(checkpoint_root=tmp_path)
    run_training(tiny_config(tiny_dataset, epochs=1), reporter)
    (reporter.checkpoints[-1] / RESUME_FILE).unlink()
    with pytest.raises(RobustMSAError, match=f"{RESUME_FILE}: missing"):
        load_resume_point(reporter.checkpoints[-1])
