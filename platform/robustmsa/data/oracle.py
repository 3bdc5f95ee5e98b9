"""The exact Bayes oracle of a synthetic dataset: the MAE-optimal prediction under corruption.

`Oracle.load(dataset_dir)` reads the generator's parameters (``generator.npz``, written by
`robustmsa.data.synthetic.generate`) and the train-split feature statistics from the Parquet
metadata; `Oracle.predict(batch)` returns the posterior median of the label, (B,), for a batch
as a model sees it: standardised features, possibly corrupted by the reliability spectrum. The
temporal window and the polarity cue of `robustmsa.data.synthetic` make the posterior an exact
mixture over where the window is and which polarity holds.

Notation (generative model in `robustmsa.data.synthetic`): ``K, P, Q`` latent, private and
nuisance sizes; per modality ``m`` with ``d`` features, ``A (K, d)``, ``B (P, d)``, ``C (Q, d)``,
informativeness ``s``, emission noise ``sigma``, cue ``kappa E`` (d,); train mean ``mu`` (d,)
and std ``std`` (d,), ``D = diag(1 / std)``. Column vectors below; a raw frame is ``x_t =
1[t in W] (s A^T z + c kappa E^T) + B^T u + C^T n_t + sigma eps_t`` with ``W`` the window
(every frame without one).

Derivation, per sample, for one hypothesis ``h = (t0, c)`` about the window's start and the
polarity cue (one hypothesis, "every frame, c = +1", for a dataset without either):

1. Standardisation (`ParquetSplit.batch`): ``x~_t = D (x_t - mu)``.
2. Spectrum (`robustmsa.spectrum.apply_point`), at the sample's ``(lambda, eta)`` of
   ``batch.reliability[m]`` (lambda = 0 for a modality without reliability): noise on every
   valid frame, ``x'_t = a x~_t + lambda e_t`` with ``a = sqrt(1 - lambda^2)`` and
   ``e_t ~ N(0, I_d)``, then frames dropped independently of their content, in place (a
   dropped frame keeps its neighbours' positions). What is observed is the frames still valid
   (``masks[m] & present[m]``) at their positions; the drop pattern and the original length
   carry no information about ``z``, ``t0`` or ``c`` (the window lies inside the shortest
   sequence, whatever the length), so ``eta`` is not needed. An absent modality (``present``
   False or no valid frame) contributes nothing.
3. Given ``h``, ``z`` and ``u``, the observed frames are independent with mean
   ``mu_t = a D (1[t in W] (s A^T z + c kappa E^T) + B^T u - mu)`` and one covariance
   ``Sigma_r = Lam + V V^T``: ``Lam = diag(a^2 sigma^2 D^2 + lambda^2)`` and ``V = a D C^T``
   (the nuisance). With ``P = Sigma_r^-1``, ``log p(frames | h, z, u) = const - 1/2 sum_t
   x'_t^T P x'_t + sum_t mu_t^T P x'_t - 1/2 sum_t mu_t^T P mu_t``; the first two terms do not
   depend on ``h``, so the frames enter only through two sums: ``S`` over all valid frames
   (``n`` of them) and ``S_W`` over the valid frames of the window (``n_W``).
4. Columns ``G = a D [s A^T, B^T, -mu, kappa E^T]`` (d, K + P + 2): ``mu_t = G [1_W z; u; 1;
   1_W c]``. Everything needed is ``Omega = G^T P G`` and ``q = G^T P S``, ``q_W = G^T P S_W``,
   computed without a d x d matrix: project onto ``F = D [s A^T, B^T, -mu, kappa E^T, C^T]``
   weighted by ``Lam^-1`` and apply Woodbury for the nuisance in ``Q`` dimensions. Then, with
   blocks ``z, u, 0`` (the offset) and ``o`` (the cue) of ``Omega``:

       g_z = q_W[z] - n_W (Omega[z, 0] + c Omega[z, o]),
       g_u = q[u] - n Omega[u, 0] - n_W c Omega[u, o],
       H_zz = n_W Omega[z, z],   H_zu = n_W Omega[z, u],   H_uu = n Omega[u, u],
       k = c q_W[o] - n_W c Omega[0, o] - n_W Omega[o, o] / 2,

   and ``log p(frames | h, z, u) = k + g . (z, u) - (z, u)^T H (z, u) / 2`` up to terms
   common to every hypothesis. Marginalising ``u ~ N(0, I_P)`` (the Schur complement)::

       J_m = H_zz - H_zu (I + H_uu)^-1 H_uz   (K, K),
       h_m = g_z - H_zu (I + H_uu)^-1 g_u      (K,),
       l_m = k + g_u^T (I + H_uu)^-1 g_u / 2 - log det(I + H_uu) / 2.

   Cost per sample and modality: ``O(d (K + P + Q)^2)`` for ``Omega``, the frame sums, and
   small solves per hypothesis; batched over samples and hypotheses.
5. Modalities are independent given ``(h, z)`` (private latents, nuisances and noises are
   independent) and the prior is ``z ~ N(0, I_K)``: ``z | obs, h ~ N(mu_h, Sigma_h)`` with
   ``Sigma_h = (I + sum_m J_m)^-1``, ``mu_h = Sigma_h sum_m h_m``, and the hypothesis' log
   evidence ``sum_m l_m + (sum h_m)^T Sigma_h (sum h_m) / 2 + log det Sigma_h / 2`` plus its
   log prior (``t0`` uniform, ``P(c = -1) = flip_rate``) gives its posterior weight.
6. Score ``s = c w . z + tau nu``: ``s | obs`` is the mixture over ``h`` of ``N(c w . mu_h,
   w^T Sigma_h w + tau^2)`` (`ScorePosterior`), a single Gaussian without window and cue.
7. Label ``y = g(s)`` with ``g`` non-decreasing (`LabelMap`), so ``g(median of s)`` is a
   posterior median of ``y``: the prediction minimising the expected absolute error. The
   mixture's median is found by bisection on its CDF (closed form for one component). With no
   information it is ``g(0)``, the prior median of the label (``s`` is symmetric a priori).
8. Other metrics have other Bayes decisions (`decisions`). An accuracy over classes is
   maximised, sample by sample, by the class of highest posterior probability: for Acc-7 and
   Acc-5 the class ``round(clip(y, -k, k))`` whose mass under the posterior of ``g(s)`` is
   largest (`LabelMap.class_probabilities`, summed over the mixture); for Acc-2 the sign with
   the larger probability (``P(y >= 0) >= 1/2`` for ``has0``, ``P(y > 0) >= P(y < 0)`` for
   ``non0``, which scores only samples with ``y != 0``). Correlation and weighted F1 are not
   sums of per-sample terms, so no per-sample decision maximises them in closed form: for those
   the oracle's numbers are those of its median predictions, not a bound (`DECIDED`).
9. The pooled oracle (``pooled=True``) sees each modality only through the mean of its valid
   frames (and which frames are valid): the Bayes predictor of a model that pools frames
   linearly first. Given ``h``, ``S ~ N(n c_0 + n_W (M z + c o) + n M_u u, n Sigma_r)``, which
   gives step 4's terms with ``q_W`` replaced by ``(n_W / n) q`` and ``n_W`` by ``n_W^2 / n``
   where it multiplies ``Omega[z, z]``, ``Omega[z, o]`` and ``Omega[o, o]`` (`_Statistics`).
   Without a window (``n_W = n``) nothing changes: the frame mean is sufficient there, and the
   two oracles agree; with one, the gap between them is what finding the window is worth.

Computed in float64 on the batch's device; the prediction is returned as float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.data.schema import METADATA_KEY, DatasetMeta
from robustmsa.data.synthetic import GENERATOR_FILE, GeneratorParams, LabelMap, read_generator
from robustmsa.errors import DataError

# The metrics for which `Oracle.decisions` gives the Bayes decision; with MAE (the posterior
# median, `Oracle.predict`) the metrics on which the oracle is a ceiling.
DECIDED: tuple[str, ...] = ("acc2_has0", "acc2_non0", "acc5", "acc7")
BOUNDED: frozenset[str] = frozenset(("mae", *DECIDED))

# Elements of the float64 copy of the frames that `_valid_frame_sums` makes at a time (2 MiB).
_SUM_CHUNK_ELEMENTS = 1 << 18
# Bisection steps for a mixture's quantile: the bracket (at most ~40 posterior sds wide) halves
# each step, so 80 reach float64 resolution.
_BISECTIONS = 80


def _valid_frame_sums(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``sum_t valid[b, t] * x[b, t]`` accumulated in float64, (B, d), for frames ``x``
    (B, T, d) of any float dtype and a boolean ``valid`` (B, T).

    One batched matrix product per chunk of samples: the whole batch at once (a float64 copy
    of 128 x 50 x 768 frames, 39 MB, then a masked product and a strided sum) took 114 ms per
    text batch, most of it allocating and page-faulting the temporaries, against 5 ms for
    chunks of a few samples, with the same values (`benchmarks/oracle_cost.py`)."""
    size, frames, width = x.shape
    out = torch.empty(size, 1, width, dtype=torch.float64, device=x.device)
    weights = valid.to(torch.float64)[:, None, :]  # (B, 1, T)
    step = max(1, _SUM_CHUNK_ELEMENTS // max(1, frames * width))
    for start in range(0, size, step):
        rows = slice(start, start + step)
        torch.bmm(weights[rows], x[rows].to(torch.float64), out=out[rows])
    return out[:, 0]


def _window_sums(x: torch.Tensor, valid: torch.Tensor, window: int, positions: int) -> torch.Tensor:
    """``sum_{t0 <= t < t0 + window} valid[b, t] * x[b, t]`` for every start ``t0 <
    positions``, float64 (B, positions, d), from prefix sums over the first ``positions +
    window - 1`` frames, in chunks of samples as `_valid_frame_sums` (frames past ``T`` count
    as absent)."""
    size, width = x.shape[0], x.shape[2]
    span = positions + window - 1
    out = torch.empty(size, positions, width, dtype=torch.float64, device=x.device)
    step = max(1, _SUM_CHUNK_ELEMENTS // max(1, span * width))
    for start in range(0, size, step):
        rows = slice(start, start + step)
        part = x[rows, :span].to(torch.float64) * valid[rows, :span, None]
        prefix = torch.zeros(part.shape[0], span + 1, width, dtype=torch.float64, device=x.device)
        prefix[:, 1 : part.shape[1] + 1] = torch.cumsum(part, dim=1)
        prefix[:, part.shape[1] + 1 :] = prefix[:, part.shape[1], None]
        out[rows] = prefix[:, window : window + positions] - prefix[:, :positions]
    return out


@dataclass(frozen=True)
class ScorePosterior:
    """``s | obs`` as a mixture of Gaussians: ``weight``, ``mean``, ``var`` float64 (B, H),
    the weights summing to 1 per sample; ``H = 1`` for a dataset without window and cue."""

    weight: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor

    def cdf(self, s: torch.Tensor) -> torch.Tensor:
        """``P(score <= s)`` for ``s`` (B,), (B,)."""
        return (self.weight * torch.special.ndtr((s[:, None] - self.mean) / self.var.sqrt())).sum(1)

    def quantile(self, q: float) -> torch.Tensor:
        """The ``q`` quantile (B,) for ``0 < q < 1``: closed form for one component, else
        bisection on `cdf` (continuous and strictly increasing)."""
        sd = self.var.sqrt()
        z = math.sqrt(2.0) * torch.special.erfinv(
            torch.tensor(2.0 * q - 1.0, dtype=self.mean.dtype, device=self.mean.device)
        )
        if self.mean.shape[1] == 1:
            return self.mean[:, 0] + sd[:, 0] * z
        lo = (self.mean + sd * z.clamp_max(0.0) - 10.0 * sd).min(dim=1).values
        hi = (self.mean + sd * z.clamp_min(0.0) + 10.0 * sd).max(dim=1).values
        for _ in range(_BISECTIONS):
            mid = (lo + hi) / 2
            below = self.cdf(mid) < q
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return (lo + hi) / 2

    def mixed(self, per_component: torch.Tensor) -> torch.Tensor:
        """The mixture of per-component probabilities ``(B * H, ...)`` (the components
        flattened sample-major, as `flat` gives them): ``(B, ...)``."""
        b, h = self.weight.shape
        parts = per_component.reshape(b, h, *per_component.shape[1:])
        weight = self.weight.reshape(b, h, *([1] * (per_component.dim() - 1)))
        return (weight * parts).sum(dim=1)

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every component's mean and variance, flattened to (B * H,) each."""
        return self.mean.reshape(-1), self.var.reshape(-1)


@dataclass
class _Statistics:
    """What one modality's frames tell, per sample (step 4): ``Omega`` (B, R, R), ``q`` (B, R)
    of all valid frames, ``q_w`` (B, W, R) of each window (W = 1 without a window: all valid
    frames), the counts ``n`` (B,) and ``n_w`` (B, W), and ``alpha`` (B, W), the weight of
    the window's second-order terms: ``n_w`` from the frames, ``n_w^2 / n`` from their mean
    alone (step 9); ``R = K + P + 2``."""

    Omega: torch.Tensor
    q: torch.Tensor
    q_w: torch.Tensor
    n: torch.Tensor
    n_w: torch.Tensor
    alpha: torch.Tensor


@dataclass
class _Modality:
    """Fixed per-modality quantities: ``F = D [s A^T, B^T, -mu, kappa E^T, C^T]`` (d, K + P +
    2 + Q), ``D^2`` (d,) and ``sigma``."""

    F: torch.Tensor
    D2: torch.Tensor
    sigma: float


class Oracle:
    """Exact posterior of the label of a synthetic dataset; see the module docstring."""

    def __init__(self, params: GeneratorParams, meta: DatasetMeta, *, pooled: bool = False):
        if params.digest and meta.digest and params.digest != meta.digest:
            raise DataError(
                f"generator digest {params.digest} does not match the dataset's {meta.digest}"
            )
        self.params = params
        self.meta = meta
        self.pooled = pooled
        self.label_map: LabelMap = params.label_map
        self.K = int(params.w.shape[0])
        self.P = int(params.B[MODALITIES[0]].shape[0])
        self.Q = int(params.C[MODALITIES[0]].shape[0])
        self._w = torch.from_numpy(np.asarray(params.w, np.float64))
        self._mods: dict[str, _Modality] = {}
        for m in MODALITIES:
            d = meta.dims[m]
            if params.A[m].shape != (self.K, d):
                raise DataError(f"generator A_{m} has shape {params.A[m].shape}, dims say {d}")
            dinv = 1.0 / np.asarray(meta.feature_std[m], np.float64)
            mean = np.asarray(meta.feature_mean[m], np.float64)
            raw = np.concatenate(
                [
                    params.s[m] * params.A[m],
                    params.B[m],
                    -mean[None, :],
                    params.cue(m)[None, :],
                    params.C[m],
                ]
            ).T
            self._mods[m] = _Modality(
                F=torch.from_numpy(dinv[:, None] * raw),
                D2=torch.from_numpy(dinv * dinv),
                sigma=float(params.sigma[m]),
            )
        # Hypotheses: window starts (or "every frame") x polarities, c = +1 first.
        self._signs = torch.tensor([1.0, -1.0] if params.flip_rate > 0 else [1.0])
        log_sign = [math.log1p(-params.flip_rate)]
        if params.flip_rate > 0:
            log_sign.append(math.log(params.flip_rate))
        self._log_sign_prior = torch.tensor(log_sign, dtype=torch.float64)
        self._device = torch.device("cpu")

    @classmethod
    def load(cls, dataset_dir: str | Path, *, pooled: bool = False) -> Oracle:
        """The oracle of the synthetic dataset in ``dataset_dir`` (DataError if it has none);
        ``pooled``: the one that sees each modality through the mean of its frames (step 9)."""
        root = Path(dataset_dir)
        gen = root / GENERATOR_FILE
        if not gen.is_file():
            raise DataError(f"{root}: no {GENERATOR_FILE}; only synthetic datasets have an oracle")
        train = root / "train.parquet"
        try:
            raw = (pq.read_schema(train).metadata or {}).get(METADATA_KEY)
        except OSError as exc:
            raise DataError(f"{train}: not a readable Parquet file ({exc})") from exc
        if raw is None:
            raise DataError(f"{train}: no robustmsa metadata in the Parquet schema")
        return cls(read_generator(gen), DatasetMeta.from_json(raw), pooled=pooled)

    def hypotheses(self) -> list[tuple[int | None, float]]:
        """``(t0, c)`` of each mixture component in `ScorePosterior` order (window start
        outer, polarity inner; ``t0`` None without a window)."""
        starts = range(self.params.positions) if self.params.window else [None]
        return [(t0, float(c)) for t0 in starts for c in self._signs.tolist()]

    def _to(self, device: torch.device) -> None:
        if device != self._device:
            self._w = self._w.to(device)
            self._signs = self._signs.to(device)
            self._log_sign_prior = self._log_sign_prior.to(device)
            for mod in self._mods.values():
                mod.F, mod.D2 = mod.F.to(device), mod.D2.to(device)
            self._device = device

    def _projections(self, batch: Batch, m: str) -> _Statistics:
        """The statistics of step 4 for modality ``m`` (step 9 for a pooled oracle)."""
        mod, R = self._mods[m], self.K + self.P + 2
        x = batch.features[m]  # (B, T, d)
        if x.shape[-1] != mod.F.shape[0]:
            raise ValueError(f"batch {m} has {x.shape[-1]} features, the dataset {mod.F.shape[0]}")
        valid = batch.masks[m] & batch.present[m][:, None]  # (B, T)
        n = valid.sum(dim=1).to(torch.float64)  # (B,)
        sums = _valid_frame_sums(x, valid)[:, None, :]  # (B, 1, d)
        counts = n[:, None]
        window, positions = self.params.window, self.params.positions
        if window:
            in_window = _window_sums(valid[..., None].to(torch.float64), valid, window, positions)
            counts = torch.cat([counts, in_window[..., 0]], dim=1)
            if not self.pooled:
                sums = torch.cat([sums, _window_sums(x, valid, window, positions)], dim=1)
        rel = batch.reliability.get(m)
        lam = torch.zeros_like(n) if rel is None else rel[:, 0].to(n.device, torch.float64)  # (B,)
        a = torch.sqrt((1.0 - lam * lam).clamp_min(0.0))  # (B,)
        lam_diag = (a * a * mod.sigma**2)[:, None] * mod.D2[None, :] + (lam * lam)[:, None]
        omega = torch.where((n > 0)[:, None], 1.0 / lam_diag, torch.zeros_like(lam_diag))  # (B, d)
        gram = torch.einsum("dr,bd,ds->brs", mod.F, omega, mod.F)  # F^T Lam^-1 F
        proj = (sums * omega[:, None, :]) @ mod.F  # (B, S, R + Q): F^T Lam^-1 sums
        # Woodbury on Sigma_r = Lam + V V^T, V = a D C^T: G^T P y = a (F_g^T Lam^-1 y - a^2
        # F_g^T Lam^-1 D C^T N^-1 C D Lam^-1 y) with N = I + a^2 C D Lam^-1 D C^T.
        a2 = (a * a)[:, None, None]
        eye = torch.eye(self.Q, dtype=gram.dtype, device=gram.device)
        nuisance = eye + a2 * gram[:, R:, R:]  # (B, Q, Q)
        rhs = torch.cat([gram[:, R:, :R], proj[:, :, R:].transpose(1, 2)], dim=2)
        sol = torch.linalg.solve(nuisance, rhs)  # (B, Q, R + S)
        cross = gram[:, :R, R:]  # (B, R, Q)
        Omega = a2 * (gram[:, :R, :R] - a2 * cross @ sol[:, :, :R])
        q = a[:, None, None] * (proj[:, :, :R] - a2 * (cross @ sol[:, :, R:]).transpose(1, 2))
        n_w = counts[:, 1:] if window else counts  # (B, W)
        if not self.pooled:
            q_w = q[:, 1:] if window else q
            return _Statistics(Omega, q[:, 0], q_w, n, n_w, n_w)
        share = n_w / n.clamp_min(1.0)[:, None]  # n_W / n: the window's expected part of S
        return _Statistics(Omega, q[:, 0], share[..., None] * q[:, :1], n, n_w, share * n_w)

    def _modality_terms(
        self, batch: Batch, m: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``J_m`` (B, W, K, K), ``h_m`` (B, W, C, K) and ``l_m`` (B, W, C) of step 4 for each
        window start (W) and polarity (C)."""
        K, P = self.K, self.P
        z, u, off, cue = slice(0, K), slice(K, K + P), K + P, K + P + 1
        st = self._projections(batch, m)
        Omega, q, q_w, n, n_w = st.Omega, st.q, st.q_w, st.n, st.n_w
        c = self._signs[None, None, :]  # (1, 1, C)
        nw, alpha = n_w[:, :, None], st.alpha[:, :, None]  # (B, W, 1)
        g_z = q_w[:, :, None, z] - (
            nw[..., None] * Omega[:, None, None, z, off]
            + (alpha * c)[..., None] * Omega[:, None, None, z, cue]
        )  # (B, W, C, K)
        g_u = (
            q[:, None, None, u]
            - n[:, None, None, None] * Omega[:, None, None, u, off]
            - (nw * c)[..., None] * Omega[:, None, None, u, cue]
        )  # (B, W, C, P)
        k = (
            c * (q_w[:, :, None, cue] - nw * Omega[:, None, None, off, cue])
            - alpha * Omega[:, None, None, cue, cue] / 2
        )  # (B, W, C)
        H_zz = st.alpha[..., None, None] * Omega[:, None, z, z]  # (B, W, K, K)
        H_zu = n_w[..., None, None] * Omega[:, None, z, u]  # (B, W, K, P)
        eye = torch.eye(P, dtype=Omega.dtype, device=Omega.device)
        inner = eye + n[:, None, None] * Omega[:, u, u]  # (B, P, P)
        rhs = torch.cat([H_zu.transpose(-1, -2), g_u.transpose(-1, -2)], dim=-1)
        sol = torch.linalg.solve(inner[:, None], rhs)  # (B, W, P, K + C)
        J = H_zz - H_zu @ sol[..., :K]
        h = g_z - (H_zu @ sol[..., K:]).transpose(-1, -2)
        l_m = k + (g_u * sol[..., K:].transpose(-1, -2)).sum(-1) / 2
        l_m = l_m - torch.linalg.slogdet(inner)[1][:, None, None] / 2
        return J, h, l_m

    @torch.no_grad()
    def posterior_score(self, batch: Batch) -> ScorePosterior:
        """The mixture ``s | obs`` (steps 5-6), components in `hypotheses` order."""
        device = batch.labels.device
        self._to(device)
        size, K = batch.size, self.K
        prec = torch.eye(K, dtype=torch.float64, device=device)
        info = torch.zeros(1, 1, 1, K, dtype=torch.float64, device=device)
        evidence = torch.zeros(1, 1, 1, dtype=torch.float64, device=device)
        for m in batch.modalities:
            J, h, l_m = self._modality_terms(batch, m)
            prec, info, evidence = prec + J, info + h, evidence + l_m
        starts = self.params.positions if self.params.window else 1
        signs = self._signs.numel()
        prec = prec.expand(size, starts, K, K)
        info = info.expand(size, starts, signs, K)
        cov = torch.linalg.inv(prec)
        cov = (cov + cov.transpose(-1, -2)) / 2  # (B, W, K, K)
        mean_z = (cov[:, :, None] @ info[..., None]).squeeze(-1)  # (B, W, C, K)
        log_weight = (
            evidence
            + (info * mean_z).sum(-1) / 2
            + torch.linalg.slogdet(cov)[1][:, :, None] / 2
            + self._log_sign_prior
        ).expand(size, starts, signs)
        weight = torch.softmax(log_weight.reshape(size, -1), dim=1)
        mean = (self._signs * (mean_z @ self._w)).reshape(size, -1)
        var = torch.einsum("k,bwkl,l->bw", self._w, cov, self._w) + self.params.tau**2
        var = var[:, :, None].expand(size, starts, signs).reshape(size, -1)
        return ScorePosterior(weight, mean, var)

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """The posterior median of the label, float32 (B,): ``g(median of s | obs)`` (step 7)."""
        return self.label_quantile(self.posterior_score(batch), 0.5).to(torch.float32)

    @torch.no_grad()
    def decisions(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The posterior median (float32 (B,), `predict`) and, for each metric of `DECIDED` with
        a closed-form Bayes decision, the prediction that maximises its expected value under the
        posterior, float32 (B,) each (step 8 of the module docstring)."""
        post = self.posterior_score(batch)
        mean, var = post.flat()
        decided = {}
        for metric, bound in (("acc7", 3.0), ("acc5", 2.0)):
            classes, probs = self.label_map.class_probabilities(mean, var, bound)
            decided[metric] = classes[post.mixed(probs).argmax(dim=1)].to(torch.float32)
        positive, negative = (post.mixed(p) for p in self.label_map.probability_positive(mean, var))
        one = torch.ones_like(positive, dtype=torch.float32)
        decided["acc2_has0"] = torch.where(1.0 - negative >= 0.5, one, -one)  # P(y >= 0)
        decided["acc2_non0"] = torch.where(positive >= negative, one, -one)
        return self.label_quantile(post, 0.5).to(torch.float32), decided

    def prior_median(self) -> float:
        """The label's prior median ``g(0)``: the prediction with nothing observed."""
        return float(self.label_map(torch.zeros(1, dtype=torch.float64))[0])

    def label_quantile(self, posterior: ScorePosterior, q: float) -> torch.Tensor:
        """The ``q`` posterior quantile of the label, ``g(score quantile)``, float64 (B,)."""
        return self.label_map(posterior.quantile(q))
