"""The normal-score target link (`robustmsa.models.target_link`) and how `MSAModel` applies it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from robustmsa.models.base import ModelOutput, MSAModel
from robustmsa.models.target_link import (
    KNOTS,
    from_normal_score,
    normal_score_knots,
    to_normal_score,
)
from robustmsa.training.loop import task_loss


def step_labels(n: int = 1284, seed: int = 0) -> torch.Tensor:
    """MOSI-like labels (N,): a Gaussian score rounded to thirds and clipped to [-3, 3], so that
    they pile up in ties and at both ends."""
    g = torch.Generator().manual_seed(seed)
    return (torch.round(torch.randn(n, generator=g) * 4.5) / 3).clamp(-3, 3)


def mid_rank_score(labels: torch.Tensor, value: float) -> float:
    y = labels.double()
    rank = ((y < value).sum() + (y <= value).sum()).double() / (2 * len(y))
    return float(torch.special.ndtri(rank))


@pytest.mark.parametrize("kind", ["ties", "continuous"])
def test_every_training_label_comes_back_through_the_link(kind):
    g = torch.Generator().manual_seed(1)
    y = step_labels() if kind == "ties" else torch.randn(500, generator=g) ** 3
    knots = normal_score_knots(y)
    assert knots.shape == (KNOTS,)
    torch.testing.assert_close(from_normal_score(to_normal_score(y, knots), knots), y)


def test_a_tied_label_gets_its_mid_rank_score_and_the_scores_are_standard_normal():
    y = step_labels()
    knots = normal_score_knots(y)
    s = to_normal_score(y, knots)
    for value in (-3.0, -1.0, 0.0, 3.0):  # both piles at the ends and two inner ties
        assert float(to_normal_score(torch.tensor([value]), knots)) == pytest.approx(
            mid_rank_score(y, value), abs=0.02
        )
    assert abs(float(s.mean())) < 0.05 and float(s.std()) == pytest.approx(1.0, abs=0.1)


def test_both_directions_are_non_decreasing_and_flat_beyond_the_knots():
    y = step_labels()
    knots = normal_score_knots(y)
    grid = torch.linspace(-6, 6, 2001)
    forth, back = to_normal_score(grid, knots), from_normal_score(grid, knots)
    assert torch.all(forth[1:] >= forth[:-1]) and torch.all(back[1:] >= back[:-1])
    assert float(back[0]) == float(y.min()) and float(back[-1]) == float(y.max())
    assert float(forth[0]) == float(forth[1])  # below the lowest knot: the lowest score


def test_the_score_space_median_maps_back_to_the_label_median():
    """Why the link keeps the MAE's objective: the L1 minimiser in score space, mapped back,
    is the labels' median (odd N: a sample)."""
    y = step_labels(n=1001)[torch.randperm(1001, generator=torch.Generator().manual_seed(2))]
    knots = normal_score_knots(y)
    score_median = to_normal_score(y, knots).median()
    assert float(from_normal_score(score_median[None], knots)) == float(y.median())


class Constant(MSAModel):
    """Predicts ``value`` (B,) in the units it learns, with a gradient to ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward_standardised(self, batch) -> ModelOutput:
        self.seen_labels = batch.labels
        return ModelOutput(prediction=self.value.expand(batch.labels.shape[0]))


def test_the_affine_targets_compute_what_they_did_before_the_link(batch):
    labels = batch.labels * 2 + 1
    model = Constant(0.3)
    model.fit_targets(labels)
    assert not bool(model.target_normal_score)
    out = model(replace(batch, labels=labels))
    # Bit for bit the formulas of the affine-only code: z = (y - mu) / sigma, y_hat = z_hat
    # sigma + mu, loss = mean |y_hat - y| / sigma.
    assert torch.equal(model.seen_labels, (labels - model.target_mean) / model.target_std)
    y_hat = model.value.detach() * model.target_std + model.target_mean
    assert torch.equal(out.prediction.detach(), y_hat.expand(len(labels)))
    expected = (out.prediction.detach() - labels).abs().mean() / model.target_std
    assert torch.equal(task_loss(out, labels, model).detach(), expected)


def test_with_the_link_the_model_learns_scores_and_the_loss_is_taken_in_score_space(batch):
    labels = step_labels(n=len(batch.labels), seed=3) * 1.5 + 2  # off 0, other spread
    model = Constant(0.3)
    model.fit_targets(labels, "normal_score")
    assert bool(model.target_normal_score)
    scores = model.to_standardised(labels)
    out = model(replace(batch, labels=labels))
    torch.testing.assert_close(model.seen_labels, scores)
    back = model.from_standardised(torch.tensor([0.3]))
    torch.testing.assert_close(out.prediction.detach(), back.expand(len(labels)))
    loss = task_loss(out, labels, model)
    torch.testing.assert_close(loss.detach(), (0.3 - scores).abs().mean())
    loss.backward()  # d/dv mean |v - s| = mean sign(v - s)
    torch.testing.assert_close(model.value.grad, torch.sign(0.3 - scores).mean())


def test_a_constant_label_set_and_bad_links_are_refused_or_handled():
    model = Constant(0.0)
    model.fit_targets(torch.full((10,), 4.0), "normal_score")
    assert float(model.from_standardised(torch.tensor([1.7]))) == 4.0
    with pytest.raises(ValueError, match="target_link: must be"):
        model.fit_targets(torch.ones(3), "rank")
    with pytest.raises(ValueError, match="non-decreasing"):
        model.set_target_scale(0.0, 1.0, torch.linspace(1, -1, KNOTS))
