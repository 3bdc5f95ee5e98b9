"""The exact Bayes oracle of a synthetic dataset: the MAE-optimal prediction under corruption.

`Oracle.load(dataset_dir)` reads the generator's parameters (``generator.npz``, written by
`robustmsa.data.synthetic.generate`) and the train-split feature statistics from the Parquet
metadata; `Oracle.predict(batch)` returns the posterior median of the label, (B,), for a batch
as a model sees it: standardised features, possibly corrupted by the reliability spectrum.

Notation (generative model in `robustmsa.data.synthetic`): ``K, P, Q`` latent, private and
nuisance sizes; per modality ``m`` with ``d`` features, ``A (K, d)``, ``B (P, d)``, ``C (Q, d)``,
informativeness ``s``, emission noise ``sigma``; train mean ``mu`` (d,) and std ``std`` (d,),
``D = diag(1 / std)``. Column vectors below; a raw frame is ``x_t = s A^T z + B^T u + C^T n_t +
sigma eps_t``.

Derivation, per sample:

1. Standardisation (`ParquetSplit.batch`): ``x~_t = D (x_t - mu)``.
2. Spectrum (`robustmsa.spectrum.apply_point`), at the sample's ``(lambda, eta)`` of
   ``batch.reliability[m]`` (lambda = 0 for a modality without reliability): noise on every
   valid frame, ``x'_t = a x~_t + lambda e_t`` with ``a = sqrt(1 - lambda^2)`` and
   ``e_t ~ N(0, I_d)``, then frames dropped independently of their content. What is observed
   is the ``n`` frames still valid (``masks[m] & present[m]``); the drop pattern and the
   original length carry no information about ``z``, so ``eta`` is not needed (``n`` is).
   An absent modality (``present`` False or ``n = 0``) contributes nothing.
3. Given ``z``, ``x'_t = a s D A^T z - a D mu + v + r_t`` with ``v = a D B^T u`` shared by the
   frames (``N(0, a^2 D B^T B D)``) and ``r_t = a D C^T n_t + a sigma D eps_t + lambda e_t``
   i.i.d. over frames (``N(0, a^2 D C^T C D + a^2 sigma^2 D^2 + lambda^2 I)``). With a shared
   term plus i.i.d. terms (compound symmetry) every block row of the inverse covariance of the
   stacked frames has the same sum, so the likelihood depends on the frames only through their
   mean ``xbar (d,)``: a sufficient statistic. Given ``z``::

       xbar ~ N(M z + c, S),   M = a s D A^T (d, K),   c = -a D mu (d,),
       S = a^2 D B^T B D + (a^2 D C^T C D + a^2 sigma^2 D^2 + lambda^2 I) / n   (d, d).

4. ``S = Lam + U U^T`` with the diagonal ``Lam = (a^2 sigma^2 D^2 + lambda^2 I) / n`` and
   ``U = [a D B^T, a D C^T / sqrt(n)]`` (d, P + Q): ``xbar = M z + c + U v' + diag noise`` with
   ``v' ~ N(0, I_{P+Q})``. Write ``F = [M, U] = G diag(c_b)`` with the fixed ``G = D [s A^T,
   B^T, C^T]`` (d, R), ``R = K + P + Q``, and the per-sample column scales ``c_b = [a (K), a (P),
   a / sqrt(n) (Q)]``. With ``omega = diag(Lam^-1)`` (d,):
   ``H = F^T diag(omega) F`` (R, R) and ``g = F^T (omega * (xbar - c))`` (R,) are the precision
   and information vector of the joint Gaussian posterior of ``(z, v')`` from this modality
   alone (likelihood part). Marginalising ``v'`` (prior ``N(0, I)``) is the Schur complement
   (equivalent to Woodbury on ``S``)::

       J_m = H_zz - H_zv (I + H_vv)^-1 H_vz   (K, K),
       h_m = g_z - H_zv (I + H_vv)^-1 g_v      (K,),

   so that ``p(xbar_m | z) ∝ exp(h_m . z - z^T J_m z / 2)``. Cost per sample and modality:
   ``O(d R^2)`` (no d x d matrix is formed); batched over samples.
5. Modalities are independent given ``z`` (private latents, nuisances and noises are
   independent), and the prior is ``N(0, I_K)``: ``z | obs ~ N(mu_z, Sigma_z)`` with
   ``Sigma_z = (I + sum_m J_m)^-1``, ``mu_z = Sigma_z sum_m h_m``.
6. Score ``s = w . z + tau nu``: ``s | obs ~ N(w . mu_z, w^T Sigma_z w + tau^2)``.
7. Label ``y = g(s)`` with ``g`` non-decreasing (`LabelMap`), so ``g(median of s) =
   g(w . mu_z)`` is a posterior median of ``y``: the prediction minimising the expected
   absolute error. With no information it is ``g(0)``, the prior median of the label.
8. Other metrics have other Bayes decisions (`decisions`). An accuracy over classes is
   maximised, sample by sample, by the class of highest posterior probability: for Acc-7 and
   Acc-5 the class ``round(clip(y, -k, k))`` whose mass under ``g(s)``, ``s ~ N(w . mu_z,
   var)``, is largest (`LabelMap.class_probabilities`); for Acc-2 the sign with the larger
   probability (``P(y >= 0) >= 1/2`` for ``has0``, ``P(y > 0) >= P(y < 0)`` for ``non0``,
   which scores only samples with ``y != 0``). Correlation and weighted F1 are not sums of
   per-sample terms, so no per-sample decision maximises them in closed form: for those the
   oracle's numbers are those of its median predictions, not a bound (`DECIDED`).

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


@dataclass
class _Modality:
    """Fixed per-modality quantities: ``G = D [s A^T, B^T, C^T]`` (d, R), ``mu`` (d,),
    ``D`` = 1/std (d,), ``sigma``."""

    G: torch.Tensor
    mu: torch.Tensor
    D: torch.Tensor
    sigma: float


class Oracle:
    """Exact posterior of the label of a synthetic dataset; see the module docstring."""

    def __init__(self, params: GeneratorParams, meta: DatasetMeta):
        if params.digest and meta.digest and params.digest != meta.digest:
            raise DataError(
                f"generator digest {params.digest} does not match the dataset's {meta.digest}"
            )
        self.params = params
        self.meta = meta
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
            std = np.asarray(meta.feature_std[m], np.float64)
            dinv = 1.0 / std
            raw = np.concatenate([params.s[m] * params.A[m], params.B[m], params.C[m]]).T
            self._mods[m] = _Modality(
                G=torch.from_numpy(dinv[:, None] * raw),
                mu=torch.from_numpy(np.asarray(meta.feature_mean[m], np.float64)),
                D=torch.from_numpy(dinv),
                sigma=float(params.sigma[m]),
            )
        self._device = torch.device("cpu")

    @classmethod
    def load(cls, dataset_dir: str | Path) -> Oracle:
        """The oracle of the synthetic dataset in ``dataset_dir`` (DataError if it has none)."""
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
        return cls(read_generator(gen), DatasetMeta.from_json(raw))

    def _to(self, device: torch.device) -> None:
        if device != self._device:
            self._w = self._w.to(device)
            for mod in self._mods.values():
                mod.G, mod.mu, mod.D = mod.G.to(device), mod.mu.to(device), mod.D.to(device)
            self._device = device

    def _modality_terms(self, batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``J_m`` (B, K, K) and ``h_m`` (B, K) of step 4."""
        mod, K, Q = self._mods[m], self.K, self.Q
        x = batch.features[m]  # (B, T, d)
        if x.shape[-1] != mod.G.shape[0]:
            raise ValueError(f"batch {m} has {x.shape[-1]} features, the dataset {mod.G.shape[0]}")
        valid = batch.masks[m] & batch.present[m][:, None]  # (B, T)
        n = valid.sum(dim=1).to(torch.float64)  # (B,)
        seen = n > 0
        n1 = n.clamp_min(1.0)
        xbar = _valid_frame_sums(x, valid) / n1[:, None]  # (B, d)
        rel = batch.reliability.get(m)
        lam = torch.zeros_like(n) if rel is None else rel[:, 0].to(n.device, torch.float64)  # (B,)
        a = torch.sqrt((1.0 - lam * lam).clamp_min(0.0))  # (B,)
        var = (a * a * mod.sigma**2)[:, None] * (mod.D * mod.D)[None, :] + (lam * lam)[:, None]
        omega = torch.where(seen[:, None], n1[:, None] / var, torch.zeros_like(var))  # (B, d)
        resid = xbar + a[:, None] * (mod.D * mod.mu)[None, :]  # xbar - c, (B, d)
        R = mod.G.shape[1]
        scale = a[:, None].expand(-1, R).clone()  # c_b, (B, R)
        scale[:, R - Q :] /= torch.sqrt(n1)[:, None]
        gram = torch.einsum("dr,bd,ds->brs", mod.G, omega, mod.G)  # G^T diag(omega) G
        H = gram * scale[:, :, None] * scale[:, None, :]  # (B, R, R)
        g = scale * ((omega * resid) @ mod.G)  # (B, R)
        Hzz, Hzv, Hvv = H[:, :K, :K], H[:, :K, K:], H[:, K:, K:]
        eye = torch.eye(R - K, dtype=H.dtype, device=H.device)
        rhs = torch.cat([Hzv.transpose(1, 2), g[:, K:, None]], dim=2)  # (B, R-K, K+1)
        sol = torch.linalg.solve(eye + Hvv, rhs)
        J = Hzz - Hzv @ sol[:, :, :K]
        h = g[:, :K] - (Hzv @ sol[:, :, K:]).squeeze(-1)
        return J, h

    @torch.no_grad()
    def posterior_latent(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``mu_z`` (B, K) and ``Sigma_z`` (B, K, K) of ``z`` given the batch (step 5)."""
        device = batch.labels.device
        self._to(device)
        size = batch.size
        prec = torch.eye(self.K, dtype=torch.float64, device=device).expand(size, -1, -1).clone()
        info = torch.zeros(size, self.K, dtype=torch.float64, device=device)
        for m in batch.modalities:
            J, h = self._modality_terms(batch, m)
            prec = prec + J
            info = info + h
        cov = torch.linalg.inv(prec)
        cov = (cov + cov.transpose(1, 2)) / 2
        mean = (cov @ info[:, :, None]).squeeze(-1)
        return mean, cov

    @torch.no_grad()
    def posterior_score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (B,) each, float64, of the Gaussian ``s | obs`` (step 6)."""
        mean_z, cov_z = self.posterior_latent(batch)
        mean = mean_z @ self._w
        var = torch.einsum("k,bkl,l->b", self._w, cov_z, self._w) + self.params.tau**2
        return mean, var

    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """The posterior median of the label, float32 (B,): ``g(E[s | obs])`` (step 7)."""
        mean, _ = self.posterior_score(batch)
        return self.label_map(mean).to(torch.float32)

    @torch.no_grad()
    def decisions(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The posterior median (float32 (B,), `predict`) and, for each metric of `DECIDED` with
        a closed-form Bayes decision, the prediction that maximises its expected value under the
        posterior, float32 (B,) each (step 8 of the module docstring)."""
        mean, var = self.posterior_score(batch)
        decided = {}
        for metric, bound in (("acc7", 3.0), ("acc5", 2.0)):
            classes, probs = self.label_map.class_probabilities(mean, var, bound)
            decided[metric] = classes[probs.argmax(dim=1)].to(torch.float32)
        positive, negative = self.label_map.probability_positive(mean, var)
        one = torch.ones_like(mean, dtype=torch.float32)
        decided["acc2_has0"] = torch.where(1.0 - negative >= 0.5, one, -one)  # P(y >= 0)
        decided["acc2_non0"] = torch.where(positive >= negative, one, -one)
        return self.label_map(mean).to(torch.float32), decided

    def prior_median(self) -> float:
        """The label's prior median ``g(0)``: the prediction with nothing observed."""
        return float(self.label_map(torch.zeros(1, dtype=torch.float64))[0])

    def label_quantile(self, mean: torch.Tensor, var: torch.Tensor, q: float) -> torch.Tensor:
        """The ``q`` posterior quantile of the label, ``g(mean + sqrt(var) Phi^-1(q))``."""
        z = math.sqrt(2.0) * torch.special.erfinv(torch.tensor(2.0 * q - 1.0, dtype=mean.dtype))
        return self.label_map(mean + var.sqrt() * z.to(mean.device))
