"""Pure corruption operators on feature modalities: one reliability point ``(λ, η)`` per modality.

Shapes as in `robustmsa.data.batch`: ``features[m]`` float32 ``(B, T, d)``, ``masks[m]`` bool
``(B, T)``, ``present[m]`` bool ``(B,)``. Token-id modalities (``[UNK]`` replacement) are a later
extension; every modality here is a float feature sequence.

Order (DESIGN.md §3): noise first, ``x' = sqrt(1 - λ²) x + λ ε`` on valid frames only, then
missingness, each valid frame dropped independently with probability ``η`` (zeroed, unmasked).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from robustmsa.data.batch import Batch
from robustmsa.spectrum.keys import MISSING_STREAM, NOISE_STREAM, stream

PointLike = Mapping[str, tuple[float, float]] | Iterable[tuple[str, tuple[float, float]]]


def unit_interval(name: str, value: object) -> float:
    """``value`` as a float in ``[0, 1]``, else ValueError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def validate_point(point: PointLike, modalities: Iterable[str]) -> dict[str, tuple[float, float]]:
    """``point`` as ``{modality: (λ, η)}`` with names in ``modalities`` and values in [0, 1]."""
    known = tuple(modalities)
    try:
        items = dict(point)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"point must map modality -> (noise, missing), got {point!r}") from exc
    out: dict[str, tuple[float, float]] = {}
    for m, pair in items.items():
        if m not in known:
            raise ValueError(f"point modality {m!r} unknown (batch has: {list(known)})")
        try:
            lam, eta = pair
        except (TypeError, ValueError) as exc:
            raise ValueError(f"point[{m!r}] must be a (noise, missing) pair, got {pair!r}") from exc
        out[m] = (
            unit_interval(f"point[{m!r}] noise", lam),
            unit_interval(f"point[{m!r}] missing", eta),
        )
    return out


def mix_noise(x: torch.Tensor, eps: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """``sqrt(1 - λ²) x + λ ε``; ``λ`` a float or a tensor broadcastable to ``x``.

    Variance-preserving for standardised ``x``; exactly ``x`` at ``λ = 0`` and ``ε`` at ``λ = 1``.
    """
    if isinstance(lam, torch.Tensor):
        return torch.sqrt(1.0 - lam * lam) * x + lam * eps
    return math.sqrt(1.0 - lam * lam) * x + lam * eps


@dataclass
class Draws:
    """The random numbers of one batch, shared by every point of a sweep.

    Per modality ``m`` with ``N_m`` valid frames (row-major (sample, frame) order of
    ``mask & present``): ``eps[m]`` float32 ``(N_m, d_m)`` standard normals and ``uniform[m]``
    float32 ``(N_m,)`` in ``[0, 1)``. A frame is dropped at missing rate ``η`` when its uniform
    is below ``η``, so the points of a curve use common random numbers: the frames dropped at
    ``η = 0.3`` are a subset of those dropped at ``η = 0.5``, and the noise direction ``ε`` is the
    same at every ``λ``. Curves are therefore smooth in the level and paired across models.
    """

    eps: dict[str, torch.Tensor] = field(default_factory=dict)
    uniform: dict[str, torch.Tensor] = field(default_factory=dict)


def draw(
    batch: Batch, modalities: Iterable[str], *, seed: int, stream_key: str, digest: str
) -> Draws:
    """CPU draws for the valid frames of ``modalities`` of ``batch``.

    Sample ``i`` draws ``(n_i, d)`` normals and ``n_i`` uniforms for its ``n_i`` valid frames
    from streams keyed by ``(digest, ids[i], stream_key, seed, modality)``, so padding length,
    batch composition, order, worker and device do not matter.
    """
    out = Draws()
    for m in modalities:
        valid = (batch.masks[m] & batch.present[m][:, None]).cpu()
        d = batch.features[m].shape[-1]
        counts = valid.sum(dim=1).tolist()
        noise: list[np.ndarray] = [np.zeros((0, d), np.float32)]
        uniform: list[np.ndarray] = [np.zeros(0, np.float32)]
        for sid, n in zip(batch.ids, counts, strict=True):
            if n == 0:
                continue
            noise.append(
                stream(digest, sid, stream_key, seed, m, NOISE_STREAM).standard_normal(
                    (n, d), dtype=np.float32
                )
            )
            uniform.append(
                stream(digest, sid, stream_key, seed, m, MISSING_STREAM).random(n, dtype=np.float32)
            )
        out.eps[m] = torch.from_numpy(np.concatenate(noise))
        out.uniform[m] = torch.from_numpy(np.concatenate(uniform))
    return out


def apply_point(
    batch: Batch,
    point: PointLike,
    *,
    seed: int,
    stream_key: str,
    digest: str,
    draws: Draws | None = None,
) -> Batch:
    """``batch`` corrupted at the reliability ``point``; a new `Batch`, the input is untouched.

    ``point`` maps modality -> ``(noise λ, missing η)`` in ``[0, 1]`` (a dict or pairs, e.g.
    ``EvalPoint.point``); modalities not in it stay clean. Per sample and modality: noise on
    valid frames, then each valid frame dropped with probability ``η``; at ``η = 1``, or when no
    valid frame is left after dropping, the modality becomes absent (``present`` False, all-False
    mask, zero features). Naturally absent modalities stay absent. Unchanged tensors are shared
    with the input, never written to.

    The random numbers of sample ``i`` depend only on ``(digest, ids[i], stream_key, seed,
    modality)`` (see `Draws`); pass ``draws`` from `draw` to reuse them across the points of a
    sweep. Returns ``reliability[m]`` float32 ``(B, 2)``: the nominal ``(λ, η)`` for each
    modality in ``point`` (every row, absent or not); other modalities keep the input's
    reliability or get zeros. ``clean`` is carried over from the input.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    for name, value in (("stream_key", stream_key), ("digest", digest)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a str, got {value!r}")
    if len(batch.ids) != batch.size:
        raise ValueError(f"batch has {len(batch.ids)} ids for {batch.size} samples")
    levels = validate_point(point, batch.modalities)
    needed = [m for m, (lam, eta) in levels.items() if (lam > 0.0 or eta > 0.0) and eta < 1.0]
    if draws is None:
        draws = draw(batch, needed, seed=seed, stream_key=stream_key, digest=digest)

    features, masks, present = dict(batch.features), dict(batch.masks), dict(batch.present)
    reliability: dict[str, torch.Tensor] = {}
    for m in batch.modalities:
        old = batch.reliability.get(m)
        reliability[m] = (
            old.clone() if old is not None else torch.zeros((batch.size, 2), dtype=torch.float32)
        )
    for m, (lam, eta) in levels.items():
        x, mask, pres = batch.features[m], batch.masks[m], batch.present[m]
        dev = x.device
        reliability[m] = (
            torch.tensor([[lam, eta]], dtype=torch.float32, device=dev)
            .expand(batch.size, 2)
            .clone()
        )
        if lam == 0.0 and eta == 0.0:
            continue
        if eta >= 1.0:  # every frame dropped: absent, nothing to draw
            features[m] = torch.zeros_like(x)
            masks[m] = torch.zeros_like(mask)
            present[m] = torch.zeros_like(pres)
            continue
        valid = mask & pres[:, None]  # (B, T)
        if m not in draws.eps or draws.eps[m].shape[0] != int(valid.sum()):
            raise ValueError(f"draws for {m!r} do not match this batch's valid frames")
        if lam > 0.0:
            x = x.clone()
            x[valid] = mix_noise(x[valid], draws.eps[m].to(dev), lam)
        if eta > 0.0:
            dropped = torch.zeros_like(mask)
            dropped[valid] = draws.uniform[m].to(dev) < eta
            mask = mask & ~dropped
        # A present sample whose frames were all dropped is absent; natural ones stay so.
        new_pres = pres & mask.any(dim=1) if eta > 0.0 else pres.clone()
        mask = mask & new_pres[:, None]
        features[m] = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=dev))
        masks[m] = mask
        present[m] = new_pres
    return replace(
        batch,
        features=features,
        masks=masks,
        present=present,
        labels=batch.labels,
        ids=list(batch.ids),
        clean=batch.clean,
        reliability=reliability,
    )
