"""The continuous reliability spectrum (DESIGN.md §3): per-modality ``(noise λ, missing η)``.

- `draw`, `apply_point`: deterministic corruption of an evaluation batch at one point, with
  random numbers shared by the points of a sweep;
- `TrainingSampler`: random per-sample corruption for training;
- `EvalPoint`, `build_points`, `PROTOCOLS`: the named evaluation protocols.

Depends only on torch, numpy, the standard library and `robustmsa.data`.
"""

from robustmsa.spectrum.operators import Draws, apply_point, draw
from robustmsa.spectrum.protocols import PROTOCOLS, EvalPoint, build_points
from robustmsa.spectrum.sampler import TrainingSampler

__all__ = [
    "PROTOCOLS",
    "Draws",
    "EvalPoint",
    "TrainingSampler",
    "apply_point",
    "build_points",
    "draw",
]
