"""QA-MoE: quality-aware mixture of experts over a continuous reliability spectrum.

Paper: "QA-MoE: Towards a Continuous Reliability Spectrum with Quality-Aware Mixture of Experts
for Robust Multimodal Sentiment Analysis", arXiv 2604.05704, ACL 2026. No public code exists;
what is known of the method comes from the abstract and secondary notes (docs/references.md).

Follows the paper's description:

- a per-modality Gaussian representation: a mean ``h_m`` and a variance ``sigma2_m`` learned
  WITHOUT labels by a heteroscedastic objective (aleatoric uncertainty);
- reliability ``r_m = 1 / (1 + sigma2_m)``;
- gated feature ``g_m = r_m * h_m + (1 - r_m) * p_m`` with a learnable prior ``p_m``, so an
  unreliable modality fades towards a learned default instead of towards noise;
- ``E = 8`` GLU experts with top-3 dispatch and a load-balancing loss;
- a router that mixes content and quality (reliability) gating;
- one checkpoint trained on the continuous spectrum (``spectrum.sampler: continuous``; the
  model itself is sampler-agnostic);
- the ablation switches: no quality gate, no prior, dense routing, and (this project's
  additions to the list) no uncertainty loss, no heteroscedastic weighting of the task loss.

This project's reading (not specified by what is public):

- the self-supervised target: the SAME encoder applied to the clean (pre-corruption) sample,
  without dropout and detached (stop-gradient); the loss is the Gaussian NLL
  ``0.5 * ((h - target)^2 * exp(-log_var) + log_var)`` averaged over feature dims, present
  modalities and samples. It needs ``batch.clean``, which the training loop sets only under
  corruption; without it (or with ``uncertainty_loss: false``) the variance heads learn only
  through the task loss, via the gate and the router;
- ``sigma2_m`` is a per-dimension vector ``(B, H)`` from a small variance head on ``h_m`` and
  ``log(1 + n_m)``, ``n_m`` the number of valid frames of the modality: the pooled ``h_m`` is a
  mean over frames and cannot tell 50 surviving frames from 2 (with frames alike, it is the
  same vector), while how much of the input survived is what missingness changes. The count,
  not the fraction, so that it does not depend on the batch's padding. The head's input is
  reduced to a scalar by the MEAN over dims before ``r_m = 1 / (1 + mean sigma2_m)``;
  log-variances are soft-clamped to ``(-5, 5)`` so ``exp(-log_var)`` stays bounded;
- an absent modality has ``r_m = 0`` exactly (its gated feature is the prior);
- the router: ``logits = Linear(concat(g_t, g_a, g_v)) + Linear([r_t, r_a, r_v])`` (the
  quality term is dropped with the quality gate); top-k keeps the k largest logits and
  renormalises them by a softmax over those k, so dense routing is exactly top-``E``;
- routing is per SAMPLE (the fused vector ``concat(g_m)``), not per frame;
- text enters through `TextInput` (config field ``text``): the text feature frames, or token
  ids through a BERT encoder; either way a `ModalityEncoder` then pools it like the others;
- numerics: encodings, variances, reliabilities, router logits, losses and the prediction are
  float32 even under bf16 autocast (the experts and encoders run in the autocast dtype);
- the load-balancing loss is Switch-Transformer style ``E * sum_e f_e * P_e``;
- the head is dual-branch: a mean MLP giving the prediction and a log-variance branch ``s``
  trained by a Gaussian NLL of the labels (``sentiment_nll``, weight ``nll_weight``). The NLL
  sees the predicted mean and the expert output DETACHED, so it trains only the variance
  branch. The paper's purpose for the branch is that noisy samples weigh less in training; it
  does not say how (nothing public gives the loss). Here the branch's precision weights the
  task loss per sample: ``task_weight = exp(-s) / mean(exp(-s))`` over the batch, detached
  (`ModelOutput.task_weight`; the training loop multiplies each sample's L1 by it). Detached,
  so the task loss cannot lower itself by declaring hard samples noisy; normalised to mean 1,
  so the loss keeps its scale and only the balance between samples changes. Before the branch
  has learned anything every weight is close to 1. ``heteroscedastic_weighting: false`` (the
  ablation) gives no weights: plain L1, the branch only reported.

Sparse dispatch (`GLUExperts`): each expert runs on exactly the samples routed to it. The
``B * k`` (sample, expert) assignments are laid out grouped by expert, samples ascending
within a group (unpadded groups: one stable sort of the ``B * k`` expert ids; padded groups:
positions from a cumulative sum over the routing; no host sync and no Python loop over samples
either way), gathered into one ``(B * k, D)`` matrix and multiplied by the stacked expert
weights with one grouped GEMM per projection (``torch.nn.functional.grouped_mm``: a single
kernel on CUDA, a C++ loop of GEMMs on CPU); outputs are gathered back and mixed by the routing
weights. On CUDA each expert's group is padded to a multiple of 8 rows and feature dims to a
multiple of 8 (the kernel's 16-byte alignment for bf16); the padding rows read a zero row and
are never read back. A torch without ``torch.nn.functional.grouped_mm`` (this project allows
torch >= 2.4) falls back to a loop over the ``E`` experts, each on its own contiguous slice of
rows (one host sync for the group sizes).

Cost of the expert layer, forward + backward, against a dense GLU with the same ACTIVE
parameters (``3H -> k F -> H``) on the same rows (CPU, one thread, defaults E = 8, k = 3,
H = 64, F = 128; `benchmarks/moe_dispatch.py`, process CPU time): 1.2-1.5x for B >= 128, where
the arithmetic dominates (the dispatch does exactly the dense layer's FLOPs; the rest is the
gathers and the smaller GEMMs); 1.7-2.1x for B <= 64, where reading all E experts' weights and
writing their gradients dominates (a dense GLU with the same TOTAL parameters, ``3H -> E F ->
H``, costs about the same there). Not yet measured on a GPU.

Shapes: ``B`` samples, ``H = hidden``, ``E = num_experts``, ``F = expert_hidden``, ``k =
top_k``; the three modalities in `MODALITIES` order (text, audio, vision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.models.base import ModelOutput, ModelSpec, MSAModel, register
from robustmsa.models.layers import MLP, ModalityEncoder, soft_clamp
from robustmsa.models.text_input import TextInput, TextInputConfig, coerce_text_config

# log-variances live in (-5, 5): sigma2 in (0.0067, 148), exp(-log_var) at most ~148.
LOG_VAR_BOUND = 5.0
# grouped_mm on CUDA wants 16-byte aligned strides and group starts: 8 bf16 (or 4 fp32) values.
CUDA_ALIGN = 8


@dataclass
class QAMoEConfig:
    hidden: int = 64
    num_experts: int = 8
    top_k: int = 3
    expert_hidden: int = 128
    dropout: float = 0.1
    uncertainty_weight: float = 0.1  # self-supervised heteroscedastic loss ("uncertainty")
    balance_weight: float = 0.01  # load-balancing loss ("load_balance")
    nll_weight: float = 0.1  # Gaussian NLL of labels for the log-variance branch only
    quality_gate: bool = True  # False: no reliability gating, router sees content only
    prior: bool = True  # False: the prior p_m is fixed at zeros (a buffer, not learned)
    dense_routing: bool = False  # True: softmax over all experts, top_k unused
    uncertainty_loss: bool = True  # False: no self-supervised heteroscedastic objective
    # False: the prediction's log-variance branch no longer weights the task loss (ablation)
    heteroscedastic_weighting: bool = True
    text: TextInputConfig = field(default_factory=TextInputConfig)

    def __post_init__(self) -> None:
        for name in ("hidden", "num_experts", "expert_hidden", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: expected an int, got {value!r}")
        for name in ("hidden", "num_experts", "expert_hidden"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(
                f"top_k: must be in [1, num_experts={self.num_experts}], got {self.top_k}"
            )
        if not 0.0 <= self.dropout < 1.0:  # also rejects NaN
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        for name in ("uncertainty_weight", "balance_weight", "nll_weight"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
        for name in (
            "quality_gate",
            "prior",
            "dense_routing",
            "uncertainty_loss",
            "heteroscedastic_weighting",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        self.text = coerce_text_config(self.text)


def _round_up(n: torch.Tensor | int, align: int) -> torch.Tensor | int:
    return (n + align - 1) // align * align


def _pad_last(t: torch.Tensor, size: int, dim: int = -1) -> torch.Tensor:
    """``t`` zero-padded along ``dim`` to ``size`` (no copy when already that size)."""
    extra = size - t.shape[dim]
    if extra == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - (dim % t.dim())) + [0, extra]
    return F.pad(t, pad)


class GLUExperts(nn.Module):
    """``E`` GLU experts ``W_out (silu(W_g x + b_g) * (W_v x + b_v)) + b_out`` with sparse
    dispatch.

    ``forward(x (B, D), index (B, k) long, weight (B, k)) -> (B, d_out)``: sample ``b`` goes
    to experts ``index[b]`` (distinct) and their outputs are summed with ``weight[b]``.
    Weights are stacked per expert: ``w_in`` (E, D, 2F) holds the gate and value projections
    side by side (one GEMM for both), ``b_in`` (E, 2F), ``w_out`` (E, F, d_out), ``b_out``
    (E, d_out). See the module docstring for the dispatch. ``use_grouped_mm`` (default:
    whenever torch has it) selects the grouped-GEMM kernel or the loop over experts;
    ``row_align`` (default: 8 on CUDA with the kernel, else 1) pads each expert's group of rows
    to a multiple. Every setting computes the same thing.
    """

    def __init__(self, num_experts: int, d_in: int, d_hidden: int, d_out: int, dropout: float):
        super().__init__()
        self.num_experts = num_experts
        self.d_hidden = d_hidden
        self.use_grouped_mm = hasattr(F, "grouped_mm")
        self.row_align: int | None = None  # rows per group a multiple of this; None: by device
        self.w_in = nn.Parameter(torch.empty(num_experts, d_in, 2 * d_hidden))
        self.b_in = nn.Parameter(torch.empty(num_experts, 2 * d_hidden))
        self.w_out = nn.Parameter(torch.empty(num_experts, d_hidden, d_out))
        self.b_out = nn.Parameter(torch.empty(num_experts, d_out))
        self.dropout = nn.Dropout(dropout)
        # nn.Linear's default init, per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        for w, b, fan_in in ((self.w_in, self.b_in, d_in), (self.w_out, self.b_out, d_hidden)):
            nn.init.uniform_(w, -(fan_in**-0.5), fan_in**-0.5)
            nn.init.uniform_(b, -(fan_in**-0.5), fan_in**-0.5)

    def _matmul(
        self, x: torch.Tensor, w: torch.Tensor, sizes: torch.Tensor, offs: torch.Tensor
    ) -> torch.Tensor:
        """Rows of ``x`` (M, K), grouped by expert with ``sizes`` (E,) rows each (group ends
        ``offs``, int32), times their expert's ``w[e]`` (K, N) -> (M, N)."""
        if self.use_grouped_mm:
            return F.grouped_mm(x, w, offs=offs)
        chunks = x.split(sizes.tolist())  # one host sync; each expert sees only its rows
        return torch.cat([chunk @ w[e] for e, chunk in enumerate(chunks)])

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """``(w_in, b_in, w_out)`` in ``dtype``; for the kernel, feature dims zero-padded to a
        multiple of `CUDA_ALIGN` (zero columns and rows add nothing to the result)."""
        w_in, b_in, w_out = self.w_in, self.b_in, self.w_out
        if self.use_grouped_mm:
            e, d_in, _ = w_in.shape
            f, d_out = self.d_hidden, w_out.shape[2]
            pad_in, pad_f, pad_out = (_round_up(n, CUDA_ALIGN) for n in (d_in, f, d_out))
            if (pad_in, pad_f, pad_out) != (d_in, f, d_out):
                # Gate and value halves padded separately so the split stays at pad_f.
                w_in = _pad_last(w_in.view(e, d_in, 2, f), pad_f).view(e, d_in, 2 * pad_f)
                w_in = _pad_last(w_in, pad_in, dim=1)
                b_in = _pad_last(b_in.view(e, 2, f), pad_f).view(e, 2 * pad_f)
                w_out = _pad_last(_pad_last(w_out, pad_out), pad_f, dim=1)
        return w_in.to(dtype), b_in.to(dtype), w_out.to(dtype)

    def forward(self, x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        b, k = index.shape
        e = self.num_experts
        d_out = self.b_out.shape[1]
        device = x.device
        align = self.row_align or (
            CUDA_ALIGN if (self.use_grouped_mm and device.type == "cuda") else 1
        )
        if torch.is_autocast_enabled(device.type):
            dtype = torch.get_autocast_dtype(device.type)
        else:
            dtype = x.dtype

        # --- dispatch plan: where each (sample, expert) assignment goes -----------------------
        flat = index.flatten()  # (B k,): expert of assignment (b, j) at b * k + j
        w_in, b_in, w_out = self._weights(dtype)
        x = _pad_last(x.to(dtype), w_in.shape[1])
        if align == 1:
            # Unpadded groups: a stable sort by expert keeps the samples ascending in a group.
            order = flat.argsort(stable=True)  # (B k,): the assignment of each row
            sizes = torch.zeros(e, dtype=torch.long, device=device).scatter_add_(
                0, flat, torch.ones_like(flat)
            )  # (E,) rows per expert
            dest = torch.empty_like(order).scatter_(0, order, torch.arange(b * k, device=device))
            routed = x.index_select(0, order.div(k, rounding_mode="floor"))  # (B k, D)
            row_expert = flat.index_select(0, order)  # (B k,)
        else:
            onehot = torch.zeros(b, e, dtype=torch.long, device=device).scatter_(1, index, 1)
            rank = onehot.cumsum(dim=0) - 1  # (B, E): position of sample b within expert e's rows
            # Static (no host sync) and a multiple of `align`, so every group, the last one too,
            # starts and ends on an aligned row.
            rows = _round_up(b * k + e * (align - 1), align)
            sizes = _round_up(onehot.sum(dim=0), align)  # (E,) rows per expert
            # The last group absorbs the slack so every row belongs to a group (rows past the
            # last offset would be left uninitialised by the kernel).
            sizes = torch.cat([sizes[:-1], sizes[-1:] + (rows - sizes.sum())])
            starts = sizes.cumsum(0) - sizes  # (E,)
            dest = starts.index_select(0, flat) + rank.gather(1, index).flatten()  # (B k,)
            # Source sample of each row; padding rows read the appended zero row (index B).
            samples = torch.arange(b, device=device).repeat_interleave(k)
            source = torch.full((rows,), b, dtype=torch.long, device=device).scatter(
                0, dest, samples
            )
            row_expert = torch.repeat_interleave(
                torch.arange(e, device=device), sizes, output_size=rows
            )  # (rows,)
            routed = torch.cat([x, x.new_zeros(1, x.shape[1])]).index_select(0, source)
        offs = sizes.cumsum(0).to(torch.int32)

        # --- the experts, each on its own rows ------------------------------------------------
        gate, value = (
            self._matmul(routed, w_in, sizes, offs) + b_in.index_select(0, row_expert)
        ).chunk(2, dim=-1)
        hidden = self.dropout(F.silu(gate) * value)  # (rows, F)
        out = self._matmul(hidden, w_out, sizes, offs)  # (rows, d_out)

        # --- combine: each assignment's output (+ its expert's b_out), mixed by the weights ----
        out = out.index_select(0, dest).view(b, k, -1)[..., :d_out]  # (B, k, d_out)
        out = out + self.b_out.index_select(0, flat).view(b, k, -1).to(out.dtype)
        return (out * weight.unsqueeze(-1).to(out.dtype)).sum(dim=1)  # (B, d_out)


class QAMoE(MSAModel):
    """Quality-aware MoE; see the module docstring for what follows the paper.

    aux_losses (unweighted, float32; a loss whose weight is 0 is not computed and its key is
    absent): ``uncertainty`` (training with ``batch.clean`` and ``uncertainty_loss`` only),
    ``load_balance`` (top-k routing only: under dense routing ``f_e = 1/E`` and the loss is the
    constant 1), ``sentiment_nll`` (training only).

    extras (detached): ``reliability`` (B, 3) in `MODALITIES` order, 0 for absent modalities;
    ``routing_weights`` (B, E), rows summing to 1 with ``top_k`` nonzeros (all E if dense);
    ``prediction_log_var`` (B,) the predicted log-variance of the sentiment.
    """

    def __init__(self, config: QAMoEConfig, dims: dict[str, int]):
        super().__init__()
        self.config = config
        hid = config.hidden
        self.text_input = TextInput(config.text, dims["text"])
        in_dims = {m: dims[m] for m in MODALITIES} | {"text": self.text_input.out_dim}
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(in_dims[m], hid, config.dropout) for m in MODALITIES}
        )
        # Variance of each feature dim of h_m, from h_m and log(1 + valid frames of m).
        self.variance_heads = nn.ModuleDict({m: MLP(hid + 1, hid, hid) for m in MODALITIES})
        prior = torch.zeros(len(MODALITIES), hid)  # p_m, one row per modality
        if config.prior:
            self.prior = nn.Parameter(prior)
        else:
            # Non-persistent: not in the state dict, so loading a checkpoint that learned a
            # prior cannot silently switch the ablation's zeros back on.
            self.register_buffer("prior", prior, persistent=False)
        fused = len(MODALITIES) * hid
        self.router_content = nn.Linear(fused, config.num_experts)
        self.router_quality = (
            nn.Linear(len(MODALITIES), config.num_experts) if config.quality_gate else None
        )
        self.experts = GLUExperts(
            config.num_experts, fused, config.expert_hidden, hid, config.dropout
        )
        self.mean_head = MLP(hid, hid, 1, config.dropout)
        self.log_var_head = nn.Linear(hid, 1)

    def aux_loss_weights(self) -> dict[str, float]:
        cfg = self.config
        return {
            "uncertainty": cfg.uncertainty_weight,
            "load_balance": cfg.balance_weight,
            "sentiment_nll": cfg.nll_weight,
        }

    def _encode(
        self, batch: Batch, *, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encodings ``h`` (B, 3, H) float32, presence (B, 3) bool and the number of valid
        frames (B, 3) float32; absent modalities encode to 0 with 0 frames."""
        hs, present, frames = [], [], []
        for m in MODALITIES:
            if m == "text":
                x, mask = self.text_input(batch, deterministic=deterministic)
            else:
                x, mask = batch.features[m], batch.masks[m]
            # present is authoritative: a frame mask left True on an absent modality is ignored.
            mask = mask & batch.present[m].unsqueeze(1)
            hs.append(self.encoders[m](x, mask, deterministic=deterministic).float())
            present.append(batch.present[m])
            frames.append(mask.sum(dim=1).float())
        return torch.stack(hs, dim=1), torch.stack(present, dim=1), torch.stack(frames, dim=1)

    def log_variance(self, h: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Per-dim log-variances (B, 3, H) float32, soft-clamped, of the encodings ``h``
        (B, 3, H) with ``frames`` (B, 3) valid frames each."""
        counts = torch.log1p(frames).unsqueeze(-1)  # (B, 3, 1)
        log_var = torch.stack(
            [
                self.variance_heads[m](torch.cat([h[:, i], counts[:, i]], dim=-1))
                for i, m in enumerate(MODALITIES)
            ],
            dim=1,
        )
        return soft_clamp(log_var.float(), LOG_VAR_BOUND)

    def _route(
        self, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits (B, E) float32 -> (index (B, k), weight (B, k), weights (B, E),
        probs (B, E)); dense routing is top-``E`` (the softmax over all experts)."""
        k = self.config.num_experts if self.config.dense_routing else self.config.top_k
        top_logits, index = logits.topk(k, dim=-1)  # (B, k)
        weight = top_logits.softmax(dim=-1)
        weights = torch.zeros_like(logits).scatter(-1, index, weight)
        return index, weight, weights, logits.softmax(dim=-1)

    def forward_standardised(self, batch: Batch) -> ModelOutput:
        cfg = self.config
        aux: dict[str, torch.Tensor] = {}

        h, present, frames = self._encode(batch)  # (B, 3, H), (B, 3), (B, 3)
        log_var = self.log_variance(h, frames)  # (B, 3, H)
        sigma2 = log_var.exp().mean(dim=-1)  # (B, 3): per-modality scalar variance
        reliability = torch.where(present, 1.0 / (1.0 + sigma2), torch.zeros_like(sigma2))

        if (
            self.training
            and cfg.uncertainty_loss
            and batch.clean is not None
            and cfg.uncertainty_weight > 0
        ):
            with torch.no_grad():  # stop-gradient target: the clean sample's encoding
                target, clean_present, _ = self._encode(batch.clean, deterministic=True)
            valid = (present & clean_present).float()  # (B, 3)
            nll = 0.5 * ((h - target).pow(2) * torch.exp(-log_var) + log_var)  # (B, 3, H)
            # clamp: a batch with no present modality contributes exactly 0, not NaN.
            aux["uncertainty"] = (nll.mean(dim=-1) * valid).sum() / valid.sum().clamp_min(1.0)

        keep = present.unsqueeze(-1)  # (B, 3, 1)
        if cfg.quality_gate:
            r = reliability.unsqueeze(-1)
            prior = self.prior.float().expand_as(h)
            gated = torch.where(keep, r * h + (1.0 - r) * prior, prior)  # (B, 3, H)
        else:
            gated = torch.where(keep, h, torch.zeros_like(h))
        u = gated.flatten(1)  # (B, 3H)

        logits = self.router_content(u).float()  # (B, E)
        if self.router_quality is not None:
            logits = logits + self.router_quality(reliability).float()
        index, weight, weights, probs = self._route(logits)
        if not cfg.dense_routing and cfg.balance_weight > 0:
            # f_e: share of the B * k routing slots given to expert e; P_e: mean probability.
            # Selection from the indices, not from weights > 0: an underflowed weight counts.
            selected = torch.zeros_like(logits).scatter(-1, index, 1.0)
            fraction = selected.mean(dim=0) / cfg.top_k
            aux["load_balance"] = cfg.num_experts * (fraction * probs.mean(dim=0)).sum()

        mixed = self.experts(u, index, weight)  # (B, H)
        prediction = self.mean_head(mixed).squeeze(-1).float()  # (B,)
        pred_log_var = soft_clamp(
            self.log_var_head(mixed.detach()).squeeze(-1).float(), LOG_VAR_BOUND
        )  # (B,)
        if self.training and cfg.nll_weight > 0:
            err2 = (batch.labels.float() - prediction.detach()).pow(2)
            aux["sentiment_nll"] = (0.5 * (err2 * torch.exp(-pred_log_var) + pred_log_var)).mean()

        task_weight = None
        if cfg.heteroscedastic_weighting:
            precision = torch.exp(-pred_log_var.detach())  # (B,)
            task_weight = precision / precision.mean()
        return ModelOutput(
            prediction=prediction,
            aux_losses=aux,
            extras={
                "reliability": reliability.detach(),
                "routing_weights": weights.detach(),
                "prediction_log_var": pred_log_var.detach(),
            },
            task_weight=task_weight,
        )


def _build(config: object, dims: dict[str, int]) -> QAMoE:
    if not isinstance(config, QAMoEConfig):
        raise TypeError(f"expected QAMoEConfig, got {type(config).__name__}")
    return QAMoE(config, dims)


SEARCH_SPACE: tuple[dict, ...] = (
    # The paper's 8 experts (top-3) lie inside, not on the edge (docs/references.md).
    {"name": "model.params.num_experts", "type": "int", "low": 2, "high": 12},
    {"name": "model.params.top_k", "type": "int", "low": 1, "high": "model.params.num_experts"},
    # Not reported in the sources we hold: the loss weights, the widths and the dropout.
    {
        "name": "model.params.uncertainty_weight",
        "type": "float",
        "low": 0.01,
        "high": 1.0,
        "log": True,
    },
    {"name": "model.params.balance_weight", "type": "float", "low": 1e-3, "high": 0.1, "log": True},
    {"name": "model.params.hidden", "type": "categorical", "choices": [32, 64, 128]},
    {"name": "model.params.expert_hidden", "type": "categorical", "choices": [64, 128, 256]},
    {"name": "model.params.dropout", "type": "float", "low": 0.0, "high": 0.3},
)

register(ModelSpec(name="qa_moe", config_cls=QAMoEConfig, build=_build, search_space=SEARCH_SPACE))
