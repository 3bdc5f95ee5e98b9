"""The continuous reliability spectrum (DESIGN.md §3): per-modality ``(noise λ, missing η)``.

- `draw`, `apply_point`: deterministic corruption of an evaluation batch at one point (float or
  per-sample rates), with random numbers shared by the points of a sweep;
- `TokenSpec`, `BERT_UNCASED`, `corrupt_tokens`: the token-id operators on text;
- `TrainingSampler`: random per-sample corruption for training;
- `EvalPoint`, `build_points`, `PROTOCOLS`: the named evaluation protocols.

Depends only on torch, numpy, the standard library and `robustmsa.data`.
"""

from robustmsa.spectrum.operators import (
    BERT_UNCASED,
    Draws,
    TokenSpec,
    apply_point,
    corrupt_tokens,
    draw,
    needs_draws,
)
from robustmsa.spectrum.protocols import PROTOCOLS, EvalPoint, build_points
from robustmsa.spectrum.sampler import TrainingSampler

__all__ = [
    "BERT_UNCASED",
    "PROTOCOLS",
    "Draws",
    "EvalPoint",
    "TokenSpec",
    "TrainingSampler",
    "apply_point",
    "build_points",
    "corrupt_tokens",
    "draw",
    "needs_draws",
]
