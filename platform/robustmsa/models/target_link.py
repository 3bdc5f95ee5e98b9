"""The normal-score target link: a monotone map of the (standardised) labels onto a Gaussian.

``training.target_link: normal_score`` trains a model on each label's *normal score*,
``s = Phi^-1(F(z))``, with ``F`` the training labels' empirical distribution, and maps its
prediction back through the training labels' quantile function. Why: sentiment labels are often
a step-shaped function of a smooth score (MOSI's averaged annotations, clipped to [-3, 3], pile
up at the integers and at the ends), and a predictor whose last layer is linear has to bend
itself to follow that shape. `benchmarks/learnability.py` measured the cost for a ridge
regression on the synthetic `mosi` preset's sufficient statistic: 26.7 % above the Bayes oracle
on the labels, 10.8 % on their normal scores (benchmarks/README.md).

The map keeps the L1 objective the MAE's: both directions are non-decreasing, and the median
commutes with a non-decreasing map, so the score-space L1 minimiser, mapped back, is the
label-space median.

Fixed-size representation (so that every checkpoint of a model has the same state shapes):
``KNOTS`` quantiles ``q_k`` of the standardised training labels at ``k / (KNOTS - 1)`` (so the
end knots are the smallest and the largest training label, and every training label lies on the
knots' range), paired with the finite scores ``s_k = Phi^-1((k + 0.5) / KNOTS)`` (from -3.30 to
3.30; the two probabilities differ by less than ``1 / KNOTS``).

- back (`from_normal_score`): piecewise-linear through ``(s_k, q_k)``, constant beyond the end
  knots; a label value shared by many training samples (a tie) is a run of equal ``q_k``,
  so every score on that run maps back to exactly that value.
- forth (`to_normal_score`): a value equal to a run of knots ``q_a = ... = q_b`` maps to the score
  of the run's middle, ``Phi^-1(((a + b) / 2 + 0.5) / KNOTS)`` (its mid-rank score, which lies
  between ``s_a`` and ``s_b``), so that ``back(forth(y)) == y`` for every
  training label; a value between two distinct knots is interpolated linearly (the exact
  inverse of ``back`` there); values beyond the end knots go to the end scores.
"""

from __future__ import annotations

import torch

KNOTS = 1024


def knot_scores(like: torch.Tensor) -> torch.Tensor:
    """``s_k = Phi^-1((k + 0.5) / KNOTS)``, ``(KNOTS,)``, on ``like``'s device and dtype."""
    p = (torch.arange(KNOTS, dtype=torch.float64) + 0.5) / KNOTS
    return torch.special.ndtri(p).to(device=like.device, dtype=like.dtype)


def normal_score_knots(z: torch.Tensor) -> torch.Tensor:
    """The link's knots ``q_k`` ``(KNOTS,)`` in ``z``'s dtype: quantiles of the standardised
    training labels ``z`` ``(N,)`` at ``k / (KNOTS - 1)`` (linear interpolation between order
    statistics, in float64)."""
    if z.numel() == 0:
        raise ValueError("normal-score link: no training labels to take quantiles of")
    p = torch.linspace(0.0, 1.0, KNOTS, dtype=torch.float64)  # the ends: min and max
    return torch.quantile(z.double().flatten(), p).to(z.dtype)


def from_normal_score(s: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Scores ``s`` (any shape) back to standardised label values through ``knots``."""
    s = s.to(knots.dtype)  # a bf16 prediction under autocast: the knots' float32
    scores = knot_scores(knots)
    right = torch.searchsorted(scores, s.detach().contiguous()).clamp(1, KNOTS - 1)
    left = right - 1
    t = ((s - scores[left]) / (scores[right] - scores[left])).clamp(0.0, 1.0)
    return knots[left] + t * (knots[right] - knots[left])


def to_normal_score(z: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Standardised label values ``z`` (any shape) to their normal scores through ``knots``."""
    scores = knot_scores(knots)
    z = z.to(knots.dtype).contiguous()
    first = torch.searchsorted(knots, z)  # first knot >= z
    last = torch.searchsorted(knots, z, right=True) - 1  # last knot <= z
    on_knots = first <= last  # z equals the run of knots first..last
    lo, hi = last.clamp(0, KNOTS - 1), first.clamp(0, KNOTS - 1)
    gap = knots[hi] - knots[lo]
    t = torch.where(gap > 0, (z - knots[lo]) / torch.where(gap > 0, gap, 1.0), 0.5)
    between = scores[lo] + t.clamp(0.0, 1.0) * (scores[hi] - scores[lo])
    # the score of the run's middle probability: the mid-rank score of a tied label
    middle_rank = (first.clamp(0, KNOTS - 1) + last.clamp(0, KNOTS - 1)).to(torch.float64) / 2
    middle = torch.special.ndtri((middle_rank + 0.5) / KNOTS).to(scores.dtype)
    return torch.where(on_knots, middle, between)
