"""A synthetic MSA benchmark with a known linear-Gaussian generative model
(docs/architecture.md §2).

Because the model is known, the Bayes-optimal prediction under any corruption of the spectrum
is computable exactly (`robustmsa.data.oracle`): the ceiling every model is measured against.

Generative model, per sample (``K, P, Q`` = ``latent_dim, private_dim, nuisance_dim``):

- shared sentiment latent ``z ~ N(0, I_K)``;
- per modality ``m`` a private latent ``u_m ~ N(0, I_P)``, constant over the sample's frames;
- per frame ``t`` a nuisance ``n_t ~ N(0, I_Q)`` and white noise ``eps_t ~ N(0, I_d)``;
- frame ``t`` of modality ``m`` (a row vector of ``d_m`` features)::

      x_t = s_m z A_m + u_m B_m + n_t C_m + sigma_m eps_t

  with fixed projections ``A_m (K, d_m)``, ``B_m (P, d_m)``, ``C_m (Q, d_m)`` drawn once from
  the seed with i.i.d. ``N(0, 1/d_m)`` entries (``B``, ``C`` times ``private_scale``,
  ``nuisance_scale``), so that each latent direction has about unit norm in feature space and
  the information a frame carries does not grow with ``d_m``; ``s_m`` (``informativeness``) and
  ``sigma_m`` (``emission_noise``) per modality set how much each modality tells about ``z``
  (text dominant by default);
- lengths: each modality's frame count is uniform on ``[ceil(T_m / 2), T_m]``;
- sentiment score ``s = w . z + tau nu``, ``nu ~ N(0, 1)``, with ``|w|^2 = 1 - tau^2`` so that
  ``s ~ N(0, 1)`` marginally (``tau`` = ``label_noise``, the part of the score no modality
  carries: annotator disagreement);
- label ``y = g(s)``, a fixed non-decreasing map (`LabelMap`):

  * ``"linear"``: ``g(s) = clip(center + scale * s, lo, hi)`` (``label_center``,
    ``label_scale``, ``label_range``);
  * ``"mosi"``: the empirical quantile function of the real CMU-MOSI train labels
    (`robustmsa.data.mosi_labels`: the 1284 values, packaged with their source) composed with
    the normal CDF, ``g(s) = y_(k)``, ``k = ceil(Phi(s) N)`` (clamped to ``1..N``),
    ``y_(1) <= ... <= y_(N)`` the sorted real labels. Each real label value is hit with
    probability ``1/N`` per copy, so the synthetic labels take exactly the real values with the
    real frequencies, discrete atoms included (about 4.1 % exact zeros, which matters for
    Has0/Non0 Acc-2). The labels ship inside the package, so every checkout and cluster node
    generates the same data; the dataset's ``source`` says ``labels=mosi-quantile``.

Two optional extensions make time and fusion matter (the ``temporal`` preset; both off in the
others, whose data are unchanged by them):

- ``window = W > 0``: the sentiment terms appear only in ``W`` consecutive frames, the same
  frame positions ``t0 .. t0 + W - 1`` in every modality, with ``t0`` uniform on ``0 ..
  positions - 1`` and ``positions = min_m ceil(T_m / 2) - W + 1``, so the window always lies
  inside the shortest possible sequence; every other frame carries only ``u_m``, nuisance and
  noise. The frame mean then dilutes the signal with ``n - W`` frames of nothing: a model has
  to find the window.
- ``flip_rate = r > 0``: a polarity cue ``c`` in ``{+1, -1}`` with ``P(c = -1) = r`` (think of
  irony) multiplies the score, ``s = c (w . z) + tau nu``; it is shown only in the window of
  the modalities with ``flip_cue[m] = kappa_m > 0``, as ``c kappa_m E_m`` added to those frames
  (``E_m (d_m,)`` fixed, i.i.d. ``N(0, 1/d_m)``). With the cue in audio and vision and the
  sentiment mostly in text, neither side alone gives the label: ``y`` depends on the product
  of what the modalities say, which a sum of unimodal predictions cannot represent. Because
  ``w . z`` is symmetric and independent of ``c``, ``s ~ N(0, 1)`` still.

Given ``(t0, c)`` the model is linear-Gaussian again, so the oracle's posterior is an exact
mixture over the ``positions x 2`` hypotheses (`robustmsa.data.oracle`).

Generation is deterministic in ``(preset, seed)`` and reads no file. The generator's
parameters are stored in the dataset directory as ``generator.npz`` (`GENERATOR_FILE`, format
in `write_generator`), so the oracle can be loaded from the dataset alone; a dataset without
the file (imported real data) has no oracle.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustmsa.data import mosi_labels
from robustmsa.data.batch import MODALITIES
from robustmsa.data.frame_cache import progress_bar
from robustmsa.data.parquet import SplitArrays, write_dataset
from robustmsa.data.schema import SPLITS, DatasetMeta
from robustmsa.errors import DataError

GENERATOR_FILE = "generator.npz"
# Format 2 adds the window and the polarity cue; a generator without them is written as format
# 1, so older readers keep reading those and refuse the ones they would misread.
GENERATOR_FORMAT = 2
_CLASSIC_FORMAT = 1
# Samples generated per chunk: bounds the temporaries of the large presets (MOSEI). Part of
# the draw order, hence of the data: changing it changes every dataset.
_CHUNK = 256


@dataclass(frozen=True)
class SynthPreset:
    """Shapes, sizes and generative parameters of one synthetic dataset (module docstring).

    ``emission_noise`` is ``sigma_m``: one float for every modality or a dict per modality.
    ``label_map`` is ``"linear"`` or ``"mosi"``; ``label_scale``/``label_center`` define the
    linear map (unused by ``"mosi"``); ``label_noise`` is ``tau`` in [0, 1). ``window`` (0: every
    frame), ``flip_rate`` in [0, 1) and ``flip_cue`` (``kappa_m >= 0`` per modality) are the
    temporal window and the polarity cue of the module docstring.
    """

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
    emission_noise: float | dict[str, float] = 0.5
    private_scale: float = 1.0
    nuisance_scale: float = 1.0
    label_map: str = "linear"
    label_scale: float = 1.5
    label_center: float = 0.0
    label_noise: float = 0.3
    window: int = 0
    flip_rate: float = 0.0
    flip_cue: dict[str, float] = field(
        default_factory=lambda: {"text": 0.0, "audio": 0.0, "vision": 0.0}
    )

    def __post_init__(self) -> None:
        for name in ("split_sizes", "lengths", "dims", "informativeness", "flip_cue"):
            value = getattr(self, name)
            missing = [
                k for k in (SPLITS if name == "split_sizes" else MODALITIES) if k not in value
            ]
            if missing:
                raise ValueError(f"{name}: missing {missing}")
        if any(v < 1 for v in self.split_sizes.values()):
            raise ValueError(f"split_sizes: every split needs >= 1 sample, got {self.split_sizes}")
        if any(v < 1 for v in self.lengths.values()) or any(v < 1 for v in self.dims.values()):
            raise ValueError(f"lengths/dims: must be >= 1, got {self.lengths} / {self.dims}")
        if min(self.latent_dim, self.private_dim, self.nuisance_dim) < 1:
            raise ValueError("latent_dim, private_dim, nuisance_dim: must be >= 1")
        if any(s <= 0 for s in self.sigmas().values()):
            raise ValueError(f"emission_noise: must be > 0, got {self.emission_noise}")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"label_noise: must be in [0, 1), got {self.label_noise}")
        if self.label_map not in ("linear", "mosi"):
            raise ValueError(f"label_map: 'linear' or 'mosi', got {self.label_map!r}")
        shortest = min((t + 1) // 2 for t in self.lengths.values())
        if not 0 <= self.window <= shortest:
            raise ValueError(
                f"window: must be in [0, {shortest}] (the shortest sequence these lengths can "
                f"draw), got {self.window}"
            )
        if not 0.0 <= self.flip_rate < 1.0:
            raise ValueError(f"flip_rate: must be in [0, 1), got {self.flip_rate}")
        if any(v < 0 for v in self.flip_cue.values()):
            raise ValueError(f"flip_cue: must be >= 0, got {self.flip_cue}")
        lo, hi = self.label_range
        if not lo < hi or self.label_scale <= 0:
            raise ValueError(
                f"label_range/label_scale: need lo < hi and scale > 0, got "
                f"{self.label_range} / {self.label_scale}"
            )

    def positions(self) -> int:
        """The number of places the window can start (1 without a window)."""
        if self.window == 0:
            return 1
        return min((t + 1) // 2 for t in self.lengths.values()) - self.window + 1

    def sigmas(self) -> dict[str, float]:
        """``sigma_m`` per modality."""
        if isinstance(self.emission_noise, dict):
            return {m: float(self.emission_noise[m]) for m in MODALITIES}
        return {m: float(self.emission_noise) for m in MODALITIES}


# MMSA aligned_50 MOSI shapes, the standard CMU-MOSI split sizes (docs/references.md) and the
# real MOSI label distribution. Text carries most of the sentiment, audio and vision little (as
# on the real data, where unimodal audio/vision models are near the constant).
_MOSI = SynthPreset(
    split_sizes={"train": 1284, "valid": 229, "test": 686},
    lengths={"text": 50, "audio": 50, "vision": 50},
    dims={"text": 768, "audio": 5, "vision": 20},
    informativeness={"text": 0.45, "audio": 0.4, "vision": 0.15},
    emission_noise=1.0,
    label_map="mosi",
    label_noise=0.3,
)

PRESETS: dict[str, SynthPreset] = {
    "mosi": _MOSI,
    # The mosi shapes, sizes and labels with the sentiment in a 12-frame window (14 possible
    # places, the same in every modality) and a polarity cue shown in audio and vision that
    # flips a fifth of the scores: temporal modelling and fusion pay off (module docstring).
    # Set so that the window and the cue cost a model that averages frames or ignores audio
    # and vision a lot (the oracles of `benchmarks/temporal_preset.py`) while the models can
    # still learn from 1284 samples; docs/architecture.md §2 has the figures.
    "temporal": dataclasses.replace(
        _MOSI,
        informativeness={"text": 1.2, "audio": 0.6, "vision": 0.3},
        window=12,
        flip_rate=0.2,
        flip_cue={"text": 0.0, "audio": 0.7, "vision": 0.5},
    ),
    # MMSA unaligned_50 MOSEI shapes and split sizes: ~5.7 GB of float32 frames (generation
    # holds them in memory); not used by the tests.
    "mosei": SynthPreset(
        split_sizes={"train": 16326, "valid": 1871, "test": 4659},
        lengths={"text": 50, "audio": 500, "vision": 500},
        dims={"text": 768, "audio": 74, "vision": 35},
        informativeness={"text": 0.45, "audio": 0.05, "vision": 0.05},
        emission_noise=1.0,
        label_scale=1.0,
        label_noise=0.35,
    ),
    # MMSA unaligned_39 CH-SIMS shapes; split sizes 1368/456/457; labels in [-1, 1].
    "sims": SynthPreset(
        split_sizes={"train": 1368, "valid": 456, "test": 457},
        lengths={"text": 39, "audio": 400, "vision": 55},
        dims={"text": 768, "audio": 33, "vision": 709},
        informativeness={"text": 0.4, "audio": 0.04, "vision": 0.15},
        emission_noise=1.0,
        label_range=(-1.0, 1.0),
        label_scale=0.5,
        label_noise=0.3,
    ),
    # Small enough for unit tests and smoke studies in seconds; very informative, so a small
    # model learns it in a few hundred steps.
    "tiny": SynthPreset(
        split_sizes={"train": 160, "valid": 48, "test": 48},
        lengths={"text": 8, "audio": 10, "vision": 12},
        dims={"text": 16, "audio": 5, "vision": 7},
        informativeness={"text": 2.0, "audio": 1.0, "vision": 0.8},
        label_noise=0.2,
    ),
}


# --- the label map ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelMap:
    """The fixed non-decreasing map ``g`` from the standardised score ``s`` to the label.

    ``kind == "linear"``: ``clip(center + scale * s, lo, hi)``. ``kind == "quantile"``:
    ``knots[clamp(ceil(Phi(s) N) - 1, 0, N - 1)]`` with ``knots`` the ``N`` sorted real labels.
    Because ``g`` is non-decreasing, ``g(median of s)`` is a median of ``g(s)``.
    """

    kind: str
    center: float = 0.0
    scale: float = 1.0
    lo: float = -math.inf
    hi: float = math.inf
    knots: tuple[float, ...] = ()

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        """``g(s)`` elementwise; ``s`` any float tensor, computed in float64."""
        s = s.to(torch.float64)
        if self.kind == "linear":
            return (self.center + self.scale * s).clamp(self.lo, self.hi)
        if self.kind == "quantile":
            knots = torch.tensor(self.knots, dtype=torch.float64, device=s.device)
            n = knots.numel()
            k = torch.ceil(torch.special.ndtr(s) * n).long() - 1
            return knots[k.clamp(0, n - 1)]
        raise ValueError(f"label map kind {self.kind!r} unknown")

    def class_probabilities(
        self, mean: torch.Tensor, var: torch.Tensor, bound: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(classes (C,), probs (B, C))``: for ``s ~ N(mean, var)`` (B,) each, the probability
        of each class ``round(clip(g(s), -bound, bound))`` (NumPy's rounding, half to even, as
        the Acc-5/7 metrics round), float64; ``classes`` are ``-bound .. bound``.

        ``quantile``: the label takes the knot values only; each distinct value ``v`` has mass
        ``Phi(b(v)) - Phi(b(v-))`` with ``b(v) = Phi^-1(#knots <= v / N)`` standardised by the
        posterior (``g(s) <= v`` exactly when ``Phi(s) <= #knots <= v / N``), and its class is
        the metric's rounding of ``v``. ``linear``: ``g`` is continuous inside ``(lo, hi)``, so
        the class of ``c`` is ``g(s)`` in ``(c - 0.5, c + 0.5)`` up to a null set; the end classes
        take the tails (and the atoms of the clipping at ``lo`` and ``hi``).
        """
        mean, sd = mean.to(torch.float64), var.to(torch.float64).sqrt()
        b = int(bound)
        classes = torch.arange(-b, b + 1, dtype=torch.float64, device=mean.device)

        def below(score_bound: torch.Tensor) -> torch.Tensor:  # P(s <= bound), (B, V)
            return torch.special.ndtr((score_bound[None, :] - mean[:, None]) / sd[:, None])

        if self.kind == "linear":
            t = classes[:-1] + 0.5  # (C - 1,) label edges -> the score bounds below them
            edges = ((t - self.center) / self.scale).masked_fill(t >= self.hi, math.inf)
            cdf = below(edges.masked_fill(t < self.lo, -math.inf))
            ones = torch.ones_like(cdf[:, :1])
            upper = torch.cat([cdf, ones], dim=1)
            lower = torch.cat([torch.zeros_like(ones), cdf], dim=1)
            return classes, (upper - lower).clamp_min(0.0)
        values, mass = self._value_masses(mean, sd)
        value_class = np.round(np.clip(values, -bound, bound))
        onto = torch.tensor(value_class + b, dtype=torch.long, device=mean.device)
        probs = torch.zeros(mean.shape[0], classes.numel(), dtype=torch.float64, device=mean.device)
        probs.index_add_(1, onto, mass)
        return classes, probs

    def probability_positive(
        self, mean: torch.Tensor, var: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P(g(s) > 0), P(g(s) < 0))`` for ``s ~ N(mean, var)``, (B,) each, float64."""
        mean, sd = mean.to(torch.float64), var.to(torch.float64).sqrt()
        if self.kind == "linear":
            zero = (0.0 - self.center) / self.scale
            if self.hi <= 0.0 or self.lo > 0.0:  # the clipped map is never (or always) > 0
                zero = math.inf if self.hi <= 0.0 else -math.inf
            above = torch.special.ndtr((mean - zero) / sd)
            return above, 1.0 - above
        values, mass = self._value_masses(mean, sd)
        sign = torch.tensor(np.sign(values), device=mean.device)
        return mass[:, sign > 0].sum(dim=1), mass[:, sign < 0].sum(dim=1)

    def _value_masses(
        self, mean: torch.Tensor, sd: torch.Tensor
    ) -> tuple[np.ndarray, torch.Tensor]:
        """``quantile`` only: the distinct label values ``(V,)``, sorted, and the probability
        of each ``(B, V)`` float64 for ``s ~ N(mean, sd^2)``: ``g(s) <= v`` exactly when
        ``Phi(s) <= #{knots <= v} / N``, so ``P(g(s) = v) = P(g(s) <= v) - P(g(s) < v)``, each a
        normal CDF at ``Phi^-1`` of that fraction, standardised by the posterior."""
        if self.kind != "quantile":
            raise ValueError(f"label map kind {self.kind!r} unknown")
        knots = np.asarray(self.knots, dtype=np.float64)
        values = np.unique(knots)
        fractions = np.stack(
            [np.searchsorted(knots, values, side=side) / knots.size for side in ("right", "left")]
        )  # (2, V): P(g(s) <= v) and P(g(s) < v), in Phi(s)
        bounds = torch.special.ndtri(
            torch.tensor(fractions, dtype=torch.float64, device=mean.device)
        )
        cdf = torch.special.ndtr((bounds[:, None, :] - mean[None, :, None]) / sd[None, :, None])
        return values, (cdf[0] - cdf[1]).clamp_min(0.0)

    def describe(self) -> str:
        if self.kind == "linear":
            return f"linear(center={self.center:g},scale={self.scale:g})"
        return f"quantile(n={len(self.knots)})"


def _label_map(preset: SynthPreset) -> tuple[LabelMap, str]:
    """The preset's `LabelMap` and its description for the dataset ``source``.

    ``"mosi"`` always uses the packaged train labels (`robustmsa.data.mosi_labels`); the
    description ``mosi-quantile`` is unchanged from when they were read from a file, so the
    datasets (and digests) are the same as those generated with that file.
    """
    lo, hi = preset.label_range
    if preset.label_map == "linear":
        return LabelMap("linear", preset.label_center, preset.label_scale, lo, hi), "linear"
    knots = tuple(mosi_labels.train_labels().tolist())
    return LabelMap("quantile", lo=lo, hi=hi, knots=knots), "mosi-quantile"


# --- generation -------------------------------------------------------------------------------


@dataclass
class GeneratorParams:
    """Everything the oracle needs; arrays float64. ``A[m]`` (K, d_m), ``B[m]`` (P, d_m),
    ``C[m]`` (Q, d_m), ``sigma[m]`` and ``s[m]`` floats, ``w`` (K,) with ``|w|^2 = 1 - tau^2``;
    ``window``, ``positions``, ``flip_rate``, and per modality the cue strength ``kappa[m]``
    and direction ``E[m]`` (d_m,) (zeros without a cue)."""

    A: dict[str, np.ndarray]
    B: dict[str, np.ndarray]
    C: dict[str, np.ndarray]
    sigma: dict[str, float]
    s: dict[str, float]
    w: np.ndarray
    tau: float
    label_map: LabelMap
    digest: str = ""
    window: int = 0
    positions: int = 1
    flip_rate: float = 0.0
    kappa: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0.0))
    E: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def classic(self) -> bool:
        """Without a window and a cue: the model of format 1."""
        return self.window == 0 and self.flip_rate == 0.0

    def cue(self, m: str) -> np.ndarray:
        """``kappa_m E_m`` (d_m,), zeros where the modality shows no cue."""
        if m in self.E:
            return self.kappa[m] * self.E[m]
        return np.zeros(self.A[m].shape[1])


def _draw_params(rng: np.random.Generator, preset: SynthPreset, label_map: LabelMap):
    k, p, q = preset.latent_dim, preset.private_dim, preset.nuisance_dim
    a, b, c = {}, {}, {}
    for m in MODALITIES:
        scale = 1.0 / math.sqrt(preset.dims[m])
        a[m] = rng.standard_normal((k, preset.dims[m])) * scale
        b[m] = rng.standard_normal((p, preset.dims[m])) * (scale * preset.private_scale)
        c[m] = rng.standard_normal((q, preset.dims[m])) * (scale * preset.nuisance_scale)
    w = rng.standard_normal(k)
    w *= math.sqrt(1.0 - preset.label_noise**2) / np.linalg.norm(w)
    # Drawn only with a cue: the presets without one keep their draws, hence their data.
    e = {}
    if preset.flip_rate > 0.0:
        e = {m: rng.standard_normal(preset.dims[m]) / math.sqrt(preset.dims[m]) for m in MODALITIES}
    return GeneratorParams(
        A=a,
        B=b,
        C=c,
        sigma=preset.sigmas(),
        s={m: float(preset.informativeness[m]) for m in MODALITIES},
        w=w,
        tau=float(preset.label_noise),
        label_map=label_map,
        window=int(preset.window),
        positions=preset.positions(),
        flip_rate=float(preset.flip_rate),
        kappa={m: float(preset.flip_cue[m]) for m in MODALITIES},
        E=e,
    )


def _split(
    rng: np.random.Generator, preset: SynthPreset, par: GeneratorParams, n: int, split: str
) -> SplitArrays:
    k, p, q = preset.latent_dim, preset.private_dim, preset.nuisance_dim
    z = rng.standard_normal((n, k))
    signal = z @ par.w
    score = signal + par.tau * rng.standard_normal(n)  # s ~ N(0, 1)
    lengths = {
        m: rng.integers((preset.lengths[m] + 1) // 2, preset.lengths[m] + 1, size=n)
        for m in MODALITIES
    }
    u = {m: rng.standard_normal((n, p)) for m in MODALITIES}
    # The window's start and the polarity, drawn only where the preset has them (the other
    # presets keep their draws): c = -1 turns s = w.z + tau nu into -w.z + tau nu.
    start = rng.integers(0, par.positions, size=n) if par.window else None
    polarity = np.ones(n)
    if par.flip_rate > 0.0:
        polarity = np.where(rng.random(n) < par.flip_rate, -1.0, 1.0)
        score = score - (1.0 - polarity) * signal
    labels = par.label_map(torch.from_numpy(score)).numpy().astype(np.float32)
    frames: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        for m in MODALITIES:
            d, lens = preset.dims[m], lengths[m][lo:hi]
            sentiment = par.s[m] * (z[lo:hi] @ par.A[m])  # (n_c, d)
            if m in par.E:
                sentiment = sentiment + polarity[lo:hi, None] * par.cue(m)[None, :]
            total = int(lens.sum())
            x = rng.standard_normal((total, d), dtype=np.float32)  # eps, all frames of the chunk
            x *= np.float32(par.sigma[m])
            x += (rng.standard_normal((total, q)) @ par.C[m]).astype(np.float32)
            if par.window == 0:
                base = sentiment + u[m][lo:hi] @ par.B[m]
                x += np.repeat(base, lens, axis=0).astype(np.float32)
            else:
                x += np.repeat(u[m][lo:hi] @ par.B[m], lens, axis=0).astype(np.float32)
                frame = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)  # t per frame
                begin = np.repeat(start[lo:hi], lens)
                inside = (frame >= begin) & (frame < begin + par.window)
                x += (np.repeat(sentiment, lens, axis=0) * inside[:, None]).astype(np.float32)
            frames[m].extend(np.split(x, np.cumsum(lens)[:-1]))
    return SplitArrays(
        ids=[f"{split}-{i:06d}" for i in range(n)],
        labels=labels,
        frames=frames,
        present={m: np.ones(n, dtype=bool) for m in MODALITIES},
    )


def write_generator(path: str | Path, par: GeneratorParams) -> None:
    """Save ``par`` as ``.npz``: ``format``, ``digest``, ``modalities``, ``A_<m>``, ``B_<m>``,
    ``C_<m>``, ``sigma`` (3,), ``s`` (3,) in `MODALITIES` order, ``w``, ``tau``,
    ``label_kind``, ``label_linear`` ``[center, scale, lo, hi]``, ``label_knots``; format 2
    (a window or a cue) adds ``window``, ``positions``, ``flip_rate``, ``kappa`` (3,) and, with
    a cue, ``E_<m>``."""
    lm = par.label_map
    arrays = {
        "format": np.int64(_CLASSIC_FORMAT if par.classic else GENERATOR_FORMAT),
        "digest": np.str_(par.digest),
        "modalities": np.array(MODALITIES),
        "sigma": np.array([par.sigma[m] for m in MODALITIES]),
        "s": np.array([par.s[m] for m in MODALITIES]),
        "w": par.w,
        "tau": np.float64(par.tau),
        "label_kind": np.str_(lm.kind),
        "label_linear": np.array([lm.center, lm.scale, lm.lo, lm.hi]),
        "label_knots": np.array(lm.knots, dtype=np.float64),
    }
    for m in MODALITIES:
        arrays[f"A_{m}"], arrays[f"B_{m}"], arrays[f"C_{m}"] = par.A[m], par.B[m], par.C[m]
    if not par.classic:
        arrays["window"] = np.int64(par.window)
        arrays["positions"] = np.int64(par.positions)
        arrays["flip_rate"] = np.float64(par.flip_rate)
        arrays["kappa"] = np.array([par.kappa[m] for m in MODALITIES])
        arrays.update({f"E_{m}": e for m, e in par.E.items()})
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def read_generator(path: str | Path) -> GeneratorParams:
    """The `GeneratorParams` saved by `write_generator`."""
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable generator file ({exc})") from exc
    if int(data.get("format", -1)) not in (_CLASSIC_FORMAT, GENERATOR_FORMAT):
        raise DataError(f"{path}: generator format {data.get('format')} unsupported")
    order = [str(m) for m in data["modalities"]]
    center, scale, lo, hi = (float(v) for v in data["label_linear"])
    label_map = LabelMap(
        str(data["label_kind"]), center, scale, lo, hi, tuple(data["label_knots"].tolist())
    )
    return GeneratorParams(
        A={m: data[f"A_{m}"] for m in order},
        B={m: data[f"B_{m}"] for m in order},
        C={m: data[f"C_{m}"] for m in order},
        sigma={m: float(v) for m, v in zip(order, data["sigma"], strict=True)},
        s={m: float(v) for m, v in zip(order, data["s"], strict=True)},
        w=data["w"],
        tau=float(data["tau"]),
        label_map=label_map,
        digest=str(data["digest"]),
        window=int(data.get("window", 0)),
        positions=int(data.get("positions", 1)),
        flip_rate=float(data.get("flip_rate", 0.0)),
        kappa={
            m: float(v) for m, v in zip(order, data.get("kappa", np.zeros(len(order))), strict=True)
        },
        E={m: data[f"E_{m}"] for m in order if f"E_{m}" in data},
    )


def generate(
    preset: str | SynthPreset,
    out_dir: str | Path,
    seed: int = 0,
    *,
    name: str | None = None,
    progress: bool | None = None,
) -> Path:
    """Generate the synthetic dataset ``preset`` (a `PRESETS` name or a `SynthPreset`) with
    ``seed`` into the new directory ``out_dir``; returns ``out_dir``.

    The directory (three Parquet splits and `GENERATOR_FILE`) appears atomically: it is
    assembled in a hidden sibling directory and renamed into place. ``name`` (default: the
    preset's name, ``"custom"`` for an instance) goes into the dataset name and ``source``.
    ``progress``: a bar over the splits and the write (None: only when stderr is a terminal).
    """
    if isinstance(preset, SynthPreset):
        spec, label = preset, name or "custom"
    elif preset in PRESETS:
        spec, label = PRESETS[preset], name or preset
    else:
        raise DataError(f"synthetic preset {preset!r} unknown (known: {sorted(PRESETS)})")
    out = Path(out_dir)
    if out.exists():
        raise DataError(f"{out}: output directory already exists; remove it or choose another")
    label_map, label_desc = _label_map(spec)
    rng = np.random.default_rng(seed)
    par = _draw_params(rng, spec, label_map)
    bar = progress_bar(len(SPLITS) + 1, f"synthetic {label}", progress, unit="step")
    splits = {}
    for s in SPLITS:
        splits[s] = _split(rng, spec, par, spec.split_sizes[s], s)
        bar.update()
    lo, hi = spec.label_range
    meta = DatasetMeta(
        name=f"synthetic-{label}",
        dims=dict(spec.dims),
        label_range=(float(lo), float(hi)),
        source=f"robustmsa synthetic preset={label} seed={seed} labels={label_desc}",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.gen.", dir=out.parent))
    try:
        written = write_dataset(staging / "dataset", splits, meta)
        par.digest = meta.digest
        write_generator(written / GENERATOR_FILE, par)
        os.replace(written, out)
        bar.update()
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    return out


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
