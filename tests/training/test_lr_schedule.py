"""The learning-rate schedule (`robustmsa.training.lr_schedule`) and how the loop applies it:
per step, over each stage's planned epochs, reported as ``train/lr``."""

from __future__ import annotations

import itertools
import math

import pytest
from robustmsa.training.lr_schedule import epoch_rates, lr_factor
from tiny_training import tiny_config, tiny_promma_config, train


def test_cosine_starts_at_the_rate_halves_midway_and_ends_at_zero():
    assert lr_factor("cosine", 0.0) == 1.0
    assert lr_factor("cosine", 0.5) == pytest.approx(0.5)
    assert lr_factor("cosine", 1.0) == pytest.approx(0.0, abs=1e-12)
    values = [lr_factor("cosine", p / 10) for p in range(11)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert {lr_factor("constant", p / 10) for p in range(11)} == {1.0}


@pytest.mark.parametrize(
    ("schedule", "progress", "message"),
    [
        ("linear", 0.5, "lr_schedule: must be one of constant, cosine, got 'linear'"),
        ("cosine", 1.5, r"progress: must be in \[0, 1\], got 1.5"),
        ("cosine", math.nan, r"progress: must be in \[0, 1\], got nan"),
    ],
)
def test_bad_schedule_or_progress_is_refused_by_name(schedule, progress, message):
    with pytest.raises(ValueError, match=message):
        lr_factor(schedule, progress)


def test_epoch_rates_continue_across_epochs_and_leave_constant_alone():
    assert epoch_rates("constant", 1e-3, 1, 4) is None
    second, third = epoch_rates("cosine", 1e-3, 2, 4), epoch_rates("cosine", 1e-3, 3, 4)
    assert second(0.0) == pytest.approx(1e-3 * lr_factor("cosine", 0.25))
    assert second(1.0) == pytest.approx(third(0.0))  # one epoch ends where the next begins
    with pytest.raises(ValueError, match="epoch 5 is outside its stage's 4 epochs"):
        epoch_rates("cosine", 1e-3, 5, 4)


def test_the_loop_anneals_per_step_and_reports_each_epochs_first_rate(tiny_dataset):
    lr = 2e-3
    _, cosine = train(tiny_config(tiny_dataset, epochs=3, lr=lr, lr_schedule="cosine"))
    _, constant = train(tiny_config(tiny_dataset, epochs=3, lr=lr))
    assert [h["train/lr"] for h in cosine.history] == pytest.approx(
        [lr * lr_factor("cosine", e / 3) for e in range(3)]
    )
    assert [h["train/lr"] for h in constant.history] == [lr] * 3
    # Within the first epoch the rate already falls below lr after the first step.
    assert cosine.history[0]["train/loss"] != constant.history[0]["train/loss"]


def test_each_training_stage_anneals_over_its_own_epochs(tiny_dataset):
    """ProMMA's reference stage (2 of 4 epochs) and full stage (2) each start at lr."""
    lr = 1e-3
    config = tiny_promma_config(tiny_dataset, lr=lr, lr_schedule="cosine")
    _, reporter = train(config)
    assert [h["stage"] for h in reporter.history] == ["reference"] * 2 + ["full"] * 2
    expected = [lr * lr_factor("cosine", p) for p in (0.0, 0.5)] * 2
    assert [h["train/lr"] for h in reporter.history] == pytest.approx(expected)
