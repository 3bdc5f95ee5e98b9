"""The continuous reliability spectrum (docs/architecture.md §3): per-modality
``(noise λ, missing η)``.

- `draw`, `apply_point`: deterministic corruption of an evaluation batch at one point (float or
  per-sample rates), with random numbers shared by the points of a sweep;
- `TokenSpec`, `BERT_UNCASED`, `corrupt_tokens`: the token-id operators on text;
- `build_sampler` and the `SpectrumSampler` family (`TrainingSampler` = continuous, rates,
  patterns, fixed, mixture): random per-sample corruption for training;
- `EvalPoint`, `build_points`, `check_protocol_names`, `PROTOCOLS`: the named evaluation
  protocols (`random_rates`: the per-sample rates of the ``random`` protocol).

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
from robustmsa.spectrum.protocols import (
    PROTOCOLS,
    EvalPoint,
    build_points,
    check_protocol_names,
    random_rates,
)
from robustmsa.spectrum.sampler import SpectrumSampler, TrainingSampler, build_sampler

__all__ = [
    "BERT_UNCASED",
    "PROTOCOLS",
    "Draws",
    "EvalPoint",
    "SpectrumSampler",
    "TokenSpec",
    "TrainingSampler",
    "apply_point",
    "build_points",
    "build_sampler",
    "check_protocol_names",
    "corrupt_tokens",
    "draw",
    "needs_draws",
    "random_rates",
]
