"""Training-time reliability samplers (docs/architecture.md §3; docs/references.md
"Robustness protocols in use").

Components, each drawing per sample and modality a reliability ``(λ, η)`` and a whole-modality
drop:

- `TrainingSampler` (``continuous``, QA-MoE): with probability ``p_corrupt`` draw
  ``λ, η ~ U(0, 1)`` (else the clean point ``(0, 0)``), then drop the whole modality with
  probability ``p_drop``;
- `RatesSampler` (``rates``, LNLN): a sample stays clean with probability ``clean_fraction``,
  else each modality gets a rate ``r ~ U(0, 1)`` on the missing axis (``η = r``), the noise axis
  (``λ = r``) or both (independent ``λ``, ``η``);
- `PatternSampler` (``patterns``, MPLMM): with probability ``p_pattern`` a sample gets one of
  the incomplete availability patterns uniformly (its other modalities dropped whole);
- `MixtureSampler` (``mixture``): per sample, one component chosen by weight.

`SpectrumSampler.__call__` applies the drawn levels with the evaluation operators (noise, then
frame drops), then the whole drops. Everything is vectorised over the batch and draws only from
the caller's generator: reproducible for a fixed batch, not across batch sizes (evaluation uses
`apply_point` for that). `build_sampler` makes the one a ``spectrum`` config section names.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from robustmsa.data.batch import Batch
from robustmsa.spectrum.operators import corrupt_tokens, mix_noise, unit_interval

if TYPE_CHECKING:  # the config layer sits above this one; only its type is named here
    from robustmsa.config import SpectrumConfig

MIXTURE_COMPONENTS: tuple[str, ...] = ("continuous", "rates", "patterns")
SAMPLERS: tuple[str, ...] = (*MIXTURE_COMPONENTS, "fixed", "mixture")
RATES_AXES: tuple[str, ...] = ("missing", "noise", "both")

# One modality's draw for the batch, on the generator's device: λ float (B,), η float (B,),
# whole-modality drop bool (B,).
Levels = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """``U[0, 1)`` float32 of ``shape`` from ``generator``, on the generator's device."""
    return torch.rand(shape, generator=generator, device=generator.device)


def check_mixture_weights(weights: Mapping[str, object]) -> dict[str, float]:
    """``weights`` as ``{component: float}``; ValueError naming the key for a bad entry.

    Names must be in `MIXTURE_COMPONENTS`, weights finite and ``>= 0``, not all 0; a component
    left out has weight 0. Messages start with ``mixture_weights``, the config field.
    """
    if not isinstance(weights, Mapping):
        raise ValueError(f"mixture_weights: expected a mapping, got {weights!r}")
    out: dict[str, float] = {}
    for name, w in weights.items():
        if name not in MIXTURE_COMPONENTS:
            raise ValueError(
                f"mixture_weights.{name}: unknown component (known: {list(MIXTURE_COMPONENTS)})"
            )
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"mixture_weights.{name}: must be a finite number >= 0, got {w!r}")
        out[name] = float(w)
    if not any(w > 0 for w in out.values()):
        raise ValueError(f"mixture_weights: must not all be 0, got {dict(weights)!r}")
    return out


class SpectrumSampler(ABC):
    """Corrupt a training batch; ``clean`` of the result is the input (its own ``clean`` unset).

    ``reliability[m]`` float32 ``(B, 2)`` holds the drawn ``(λ, η)``, with ``η = 1`` where the
    whole modality was dropped and ``(0, 0)`` where a modality was restored. Naturally absent
    modalities stay absent. A sample that had at least one present modality keeps at least one:
    if all were dropped, one of its naturally present modalities, chosen uniformly, is restored
    clean.
    """

    @property
    @abstractmethod
    def corrupts(self) -> bool:
        """Whether `levels` can yield ``λ > 0`` or ``η > 0`` (noise and frames drawn only then)."""

    @abstractmethod
    def levels(
        self, b: int, modalities: tuple[str, ...], generator: torch.Generator
    ) -> Iterator[Levels]:
        """One `Levels` per modality, in order.

        Consumed lazily, one modality at a time between that modality's noise draws, so a
        component's random numbers interleave with them; `TrainingSampler` relies on this order
        to reproduce its original output.
        """

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        """A new corrupted `Batch`; random numbers come from ``generator`` (on its own device)."""
        b, mods = batch.size, batch.modalities
        gdev = generator.device
        features, masks, present, reliability = {}, {}, {}, {}
        drawn = self.levels(b, mods, generator)
        for m, (lam, eta, whole) in zip(mods, drawn, strict=True):
            x, mask, pres = batch.features[m], batch.masks[m], batch.present[m]
            dev = x.device
            lam, eta, whole = lam.to(dev), eta.to(dev), whole.to(dev)
            valid = mask & pres[:, None]  # (B, T)
            if self.corrupts:
                eps = torch.randn(x.shape, generator=generator, device=gdev).to(dev)
                noisy = mix_noise(x, eps, lam[:, None, None].to(x.dtype))
                x = torch.where(valid[..., None], noisy, x)
                mask = mask & ~(_rand(generator, *mask.shape).to(dev) < eta[:, None])
            # No frame left after dropping (η > 0) makes the modality absent, as in apply_point.
            new_pres = pres & ~whole & (mask.any(dim=1) | (eta == 0))
            mask = mask & new_pres[:, None]
            features[m] = torch.where(
                mask[..., None], x, torch.zeros((), dtype=x.dtype, device=dev)
            )
            masks[m] = mask
            present[m] = new_pres
            reliability[m] = torch.stack([lam, torch.where(whole, torch.ones_like(eta), eta)], 1)

        if mods:
            natural = torch.stack([batch.present[m] for m in mods], 1)  # (B, M)
            after = torch.stack([present[m] for m in mods], 1)  # (B, M)
            need = natural.any(1) & ~after.any(1)  # (B,)
            scores = _rand(generator, b, len(mods)).to(natural.device)
            choice = torch.where(natural, scores, torch.full_like(scores, -1.0)).argmax(1)
            for j, m in enumerate(mods):
                back = (need & (choice == j)).to(features[m].device)  # (B,)
                features[m] = torch.where(back[:, None, None], batch.features[m], features[m])
                masks[m] = torch.where(back[:, None], batch.masks[m], masks[m])
                present[m] = present[m] | back
                reliability[m] = torch.where(
                    back[:, None], torch.zeros_like(reliability[m]), reliability[m]
                )

        tokens = batch.tokens
        if tokens is not None and "text" in reliability:
            # After the feature decisions, so tokens follow them (η = 1 for a dropped text,
            # (0, 0) for a restored one); batches without tokens draw exactly as before.
            dev, shape = tokens.device, tuple(tokens.shape)
            lam_eta = reliability["text"].to(dev)
            tokens = corrupt_tokens(
                tokens,
                batch.token_mask & batch.present["text"].to(dev)[:, None],
                lam_eta[:, 0],
                lam_eta[:, 1],
                _rand(generator, *shape).to(dev),
                torch.rand(shape, generator=generator, device=gdev, dtype=torch.float64).to(dev),
                _rand(generator, *shape).to(dev),
            )

        return replace(
            batch,
            features=features,
            masks=masks,
            present=present,
            tokens=tokens,
            ids=list(batch.ids),
            clean=replace(batch, clean=None),
            reliability={m: r.to(torch.float32) for m, r in reliability.items()},
        )


class TrainingSampler(SpectrumSampler):
    """``continuous`` (QA-MoE): ``λ, η ~ U(0, 1)`` w.p. ``p_corrupt``; whole drop w.p. ``p_drop``.

    Its random numbers are drawn in the order of the original single-class sampler, so a given
    generator state yields the same batch as before the other components existed.
    """

    def __init__(self, p_corrupt: float, p_drop: float):
        self.p_corrupt = unit_interval("p_corrupt", p_corrupt)
        self.p_drop = unit_interval("p_drop", p_drop)

    def __repr__(self) -> str:
        return f"TrainingSampler(p_corrupt={self.p_corrupt}, p_drop={self.p_drop})"

    @property
    def corrupts(self) -> bool:
        return self.p_corrupt > 0.0

    def levels(
        self, b: int, modalities: tuple[str, ...], generator: torch.Generator
    ) -> Iterator[Levels]:
        zero = torch.zeros(b, device=generator.device)
        for _ in modalities:
            corrupt = _rand(generator, b) < self.p_corrupt  # (B,)
            lam = torch.where(corrupt, _rand(generator, b), zero)
            eta = torch.where(corrupt, _rand(generator, b), zero)
            yield lam, eta, _rand(generator, b) < self.p_drop


class RatesSampler(SpectrumSampler):
    """``rates`` (LNLN): clean w.p. ``clean_fraction``, else per-modality rates ``r ~ U(0, 1)``.

    ``axis``: ``missing`` (``η = r``, ``λ = 0``), ``noise`` (``λ = r``, ``η = 0``) or ``both``
    (independent ``λ, η ~ U(0, 1)``). No whole-modality drop.
    """

    def __init__(self, clean_fraction: float = 0.5, axis: str = "missing"):
        self.clean_fraction = unit_interval("clean_fraction", clean_fraction)
        if axis not in RATES_AXES:
            raise ValueError(f"rates_axis: expected one of {list(RATES_AXES)}, got {axis!r}")
        self.axis = axis

    def __repr__(self) -> str:
        return f"RatesSampler(clean_fraction={self.clean_fraction}, axis={self.axis!r})"

    @property
    def corrupts(self) -> bool:
        return self.clean_fraction < 1.0

    def levels(
        self, b: int, modalities: tuple[str, ...], generator: torch.Generator
    ) -> Iterator[Levels]:
        zero = torch.zeros(b, device=generator.device)
        keep = torch.zeros(b, dtype=torch.bool, device=generator.device)
        clean = _rand(generator, b) < self.clean_fraction  # (B,), shared by the modalities
        for _ in modalities:
            r = torch.where(clean, zero, _rand(generator, b))
            if self.axis == "missing":
                yield zero, r, keep
            elif self.axis == "noise":
                yield r, zero, keep
            else:
                yield r, torch.where(clean, zero, _rand(generator, b)), keep


class FixedSampler(SpectrumSampler):
    """``fixed`` (the per-rate protocol of TFR-Net / EMT-DLFR): every sample and modality at
    the one point ``(noise, missing)``; a model trained so is the specialist of that rate."""

    def __init__(self, noise: float = 0.0, missing: float = 0.0):
        self.noise = unit_interval("fixed_noise", noise)
        self.missing = unit_interval("fixed_missing", missing)

    def __repr__(self) -> str:
        return f"FixedSampler(noise={self.noise}, missing={self.missing})"

    @property
    def corrupts(self) -> bool:
        return self.noise > 0.0 or self.missing > 0.0

    def levels(
        self, b: int, modalities: tuple[str, ...], generator: torch.Generator
    ) -> Iterator[Levels]:
        dev = generator.device
        keep = torch.zeros(b, dtype=torch.bool, device=dev)
        for _ in modalities:
            yield (
                torch.full((b,), self.noise, device=dev),
                torch.full((b,), self.missing, device=dev),
                keep,
            )


class PatternSampler(SpectrumSampler):
    """``patterns`` (MPLMM): w.p. ``p_pattern`` one incomplete availability pattern, uniformly.

    The patterns are the non-empty proper subsets of the batch's modalities (6 for text, audio,
    vision); the modalities outside the chosen subset are dropped whole (``η = 1``). A batch
    with one modality has no incomplete pattern and stays complete.
    """

    def __init__(self, p_pattern: float = 0.7):
        self.p_pattern = unit_interval("p_pattern", p_pattern)

    def __repr__(self) -> str:
        return f"PatternSampler(p_pattern={self.p_pattern})"

    @property
    def corrupts(self) -> bool:
        return False

    def levels(
        self, b: int, modalities: tuple[str, ...], generator: torch.Generator
    ) -> Iterator[Levels]:
        gdev = generator.device
        zero = torch.zeros(b, device=gdev)
        n = len(modalities)
        # Pattern k keeps modality j when bit j of k + 1 is set: k + 1 runs over 1 .. 2^n - 2.
        codes = torch.arange(1, 2**n - 1, device=gdev)  # (K,)
        keeps = ((codes[:, None] >> torch.arange(n, device=gdev)) & 1) == 1  # (K, M)
        use = _rand(generator, b) < self.p_pattern  # (B,)
        if len(codes):
            pick = torch.randint(len(codes), (b,), generator=generator, device=gdev)
            kept = keeps[pick] | ~use[:, None]  # (B, M)
        else:
            kept = torch.ones((b, n), dtype=torch.bool, device=gdev)
        for j in range(n):
            yield zero, zero, ~kept[:, j]


class MixtureSampler(SpectrumSampler):
    """``mixture``: per sample, one of ``components`` chosen with probability ∝ ``weights``.

    ``weights`` maps component name -> weight (see `check_mixture_weights`); components with
    weight 0, or left out, are never drawn.
    """

    def __init__(self, components: Mapping[str, SpectrumSampler], weights: Mapping[str, object]):
        checked = check_mixture_weights(weights)
        missing = [k for k, w in checked.items() if w > 0 and k not in components]
        if missing:
            raise ValueError(f"mixture_weights.{missing[0]}: no such component given")
        self.components = {k: components[k] for k, w in checked.items() if w > 0}
        self.weights = {k: checked[k] for k in self.components}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {w} {self.components[k]!r}" for k, w in self.weights.items())
        return f"MixtureSampler({{{parts}}})"

    @property
    def corrupts(self) -> bool:
        return any(c.corrupts for c in self.components.values())

    def levels(
        self, b: int, modalities: tuple[str, ...], generator: torch.Generator
    ) -> Iterator[Levels]:
        w = torch.tensor(list(self.weights.values()), device=generator.device)
        choice = torch.multinomial(w, b, replacement=True, generator=generator)  # (B,)
        # Every component draws for the whole batch (vectorised); each sample keeps its own.
        streams = [c.levels(b, modalities, generator) for c in self.components.values()]
        for _ in modalities:
            drawn = [next(s) for s in streams]
            lam, eta, whole = drawn[0]
            for k, (lam_k, eta_k, whole_k) in enumerate(drawn[1:], start=1):
                pick = choice == k
                lam = torch.where(pick, lam_k, lam)
                eta = torch.where(pick, eta_k, eta)
                whole = torch.where(pick, whole_k, whole)
            yield lam, eta, whole


def _component(name: str, spectrum: SpectrumConfig) -> SpectrumSampler:
    if name == "continuous":
        return TrainingSampler(spectrum.p_corrupt, spectrum.p_drop)
    if name == "rates":
        return RatesSampler(spectrum.clean_fraction, spectrum.rates_axis)
    if name == "patterns":
        return PatternSampler(spectrum.p_pattern)
    if name == "fixed":
        return FixedSampler(spectrum.fixed_noise, spectrum.fixed_missing)
    raise ValueError(f"sampler: unknown sampler {name!r} (known: {list(SAMPLERS)})")


def build_sampler(spectrum: SpectrumConfig) -> SpectrumSampler:
    """The training sampler named by ``spectrum.sampler``, with that section's parameters."""
    if spectrum.sampler != "mixture":
        return _component(spectrum.sampler, spectrum)
    weights = check_mixture_weights(spectrum.mixture_weights)
    components = {k: _component(k, spectrum) for k, w in weights.items() if w > 0}
    return MixtureSampler(components, weights)
