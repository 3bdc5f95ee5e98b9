"""The moving average of the weights (`robustmsa.training.weight_average`) and its use by the
training loop: evaluated, selected and checkpointed as best; the raw weights train on."""

from __future__ import annotations

import pytest
import torch
from robustmsa.training.checkpoint import load_weights
from robustmsa.training.weight_average import WeightAverage
from tiny_training import tiny_config, train
from torch import nn


def test_the_first_updates_follow_the_weights_then_the_decay_holds():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()  # warm-up: a = min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.average["weight"], torch.full((1, 2), 0.9))
    ema.update()  # a = min(0.5, 2/11)
    a = 2 / 11
    assert torch.allclose(ema.average["weight"], torch.full((1, 2), a * 0.9 + (1 - a)))
    for _ in range(20):
        ema.update()
    assert ema.updates == 22 and torch.allclose(ema.average["weight"], torch.ones(1, 2))


def test_applied_lends_the_average_and_gives_the_weights_back_even_on_error():
    model = nn.Linear(3, 1)
    ema = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    own = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError), ema.applied():
        for n, p in model.named_parameters():
            assert torch.equal(p, ema.average[n])
        raise RuntimeError("evaluation failed")
    for n, p in model.named_parameters():
        assert torch.equal(p, own[n])


def test_an_unmoved_parameter_keeps_its_average_exactly():
    model = nn.Linear(4, 4)
    ema = WeightAverage(model, decay=0.9)
    for _ in range(50):
        ema.update()
    for n, p in model.named_parameters():
        assert torch.equal(ema.average[n], p.detach())


@pytest.mark.parametrize("decay", [1.0, 0.0, -0.1, float("nan")])
def test_a_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match="weight_average"):
        WeightAverage(nn.Linear(1, 1), decay)


def test_the_run_evaluates_and_keeps_the_average_and_trains_the_raw_weights(tiny_dataset, tmp_path):
    averaged, reporter = train(tiny_config(tiny_dataset, epochs=1, weight_average=0.9), tmp_path)
    assert averaged.best_epoch == 1  # one epoch: its average is the best checkpoint
    last = reporter.checkpoints[-1]
    raw, best = load_weights(last, best=False), load_weights(last, best=True)
    assert [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], best[k])]
    _, plain_reporter = train(tiny_config(tiny_dataset, epochs=1, weight_average=0.0))
    # The same raw trajectory: averaging changes what is evaluated, never what is trained.
    assert [h["train/loss"] for h in reporter.history] == [
        h["train/loss"] for h in plain_reporter.history
    ]
    assert [h["val/spectrum_score"] for h in reporter.history] != [
        h["val/spectrum_score"] for h in plain_reporter.history
    ]
