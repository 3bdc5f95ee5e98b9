"""A synthetic MSA benchmark with a known linear-Gaussian generative model.

Per sample: a shared sentiment latent ``z ~ N(0, I_K)``, a private latent ``u_m ~ N(0, I_P)`` per
modality, and per frame a nuisance ``n_t ~ N(0, I_Q)``. Frame ``t`` of modality ``m`` is

    x_t = s_m * z A_m + u_m B_m + n_t C_m + sigma * eps_t,

with fixed random projections drawn from the seed and an informativeness ``s_m`` per modality
(text dominant by default). The label is ``y = clip(scale * w.z + noise, lo, hi)``. Lengths vary
per sample between half the preset length and the full length.

This is the thin generator of the walking skeleton: the data-layer issue adds the real MOSI
label distribution and the exact Bayes oracle on top of the same model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import SplitArrays, write_dataset
from robustmsa.data.schema import SPLITS, DatasetMeta
from robustmsa.errors import DataError


@dataclass(frozen=True)
class SynthPreset:
    """Shapes and sizes of one synthetic dataset."""

    split_sizes: dict[str, int]
    lengths: dict[str, int]
    dims: dict[str, int]
    informativeness: dict[str, float] = field(
        default_factory=lambda: {"text": 1.0, "audio": 0.5, "vision": 0.4}
    )
    label_range: tuple[float, float] = (-3.0, 3.0)
    latent_dim: int = 4
    private_dim: int = 4
    nuisance_dim: int = 4
    emission_noise: float = 0.5
    label_scale: float = 1.5
    label_noise: float = 0.3


PRESETS: dict[str, SynthPreset] = {
    # MMSA aligned_50 MOSI shapes and the standard CMU-MOSI split sizes (REFERENCE.md).
    "mosi": SynthPreset(
        split_sizes={"train": 1284, "valid": 229, "test": 686},
        lengths={"text": 50, "audio": 50, "vision": 50},
        dims={"text": 768, "audio": 5, "vision": 20},
    ),
    # Small enough for unit tests and smoke studies in seconds.
    "tiny": SynthPreset(
        split_sizes={"train": 160, "valid": 48, "test": 48},
        lengths={"text": 8, "audio": 10, "vision": 12},
        dims={"text": 16, "audio": 5, "vision": 7},
    ),
}


def _split(
    rng: np.random.Generator, preset: SynthPreset, proj: dict, n: int, split: str
) -> SplitArrays:
    k = preset.latent_dim
    z = rng.standard_normal((n, k))
    noise = preset.label_noise * rng.standard_normal(n)
    labels = np.clip(preset.label_scale * (z @ proj["w"]) + noise, *preset.label_range)
    frames: dict[str, list[np.ndarray]] = {}
    for m in MODALITIES:
        t_max, d = preset.lengths[m], preset.dims[m]
        lengths = rng.integers((t_max + 1) // 2, t_max + 1, size=n)
        u = rng.standard_normal((n, preset.private_dim))
        nuisance = rng.standard_normal((n, t_max, preset.nuisance_dim))
        eps = rng.standard_normal((n, t_max, d), dtype=np.float32)
        base = preset.informativeness[m] * (z @ proj["A"][m]) + u @ proj["B"][m]  # (n, d)
        x = base[:, None, :] + nuisance @ proj["C"][m] + preset.emission_noise * eps
        x = x.astype(np.float32)
        frames[m] = [x[i, : lengths[i]] for i in range(n)]
    return SplitArrays(
        ids=[f"{split}-{i:06d}" for i in range(n)],
        labels=labels.astype(np.float32),
        frames=frames,
        present={m: np.ones(n, dtype=bool) for m in MODALITIES},
    )


def generate(preset_name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Generate the synthetic dataset ``preset_name`` with ``seed`` into ``out_dir``."""
    if preset_name not in PRESETS:
        raise DataError(f"synthetic preset {preset_name!r} unknown (known: {sorted(PRESETS)})")
    preset = PRESETS[preset_name]
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(preset.latent_dim)
    proj = {
        "w": w / np.linalg.norm(w),
        "A": {m: rng.standard_normal((preset.latent_dim, preset.dims[m])) for m in MODALITIES},
        "B": {m: rng.standard_normal((preset.private_dim, preset.dims[m])) for m in MODALITIES},
        "C": {m: rng.standard_normal((preset.nuisance_dim, preset.dims[m])) for m in MODALITIES},
    }
    splits = {s: _split(rng, preset, proj, preset.split_sizes[s], s) for s in SPLITS}
    meta = DatasetMeta(
        name=f"synthetic-{preset_name}",
        dims=dict(preset.dims),
        label_range=preset.label_range,
        source=f"robustmsa synthetic preset={preset_name} seed={seed}",
    )
    return write_dataset(out_dir, splits, meta)


def ensure_synthetic(preset_name: str, cache_dir: str | Path, seed: int = 0) -> Path:
    """The synthetic dataset's directory under ``cache_dir``, generated on first use.

    Generation is deterministic in (preset, seed), so every node of a cluster that lacks the
    directory generates identical data; concurrent generators race harmlessly because the
    write is an atomic rename and the loser's copy is discarded.
    """
    target = Path(cache_dir) / f"synthetic-{preset_name}-seed{seed}"
    if target.is_dir():
        return target
    try:
        return generate(preset_name, target, seed)
    except (DataError, OSError):
        if target.is_dir():  # another process finished first
            return target
        raise
