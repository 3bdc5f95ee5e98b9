"""QA-MoE: quality-aware mixture of experts over a continuous reliability spectrum.

Paper: "QA-MoE: Towards a Continuous Reliability Spectrum with Quality-Aware Mixture of Experts
for Robust Multimodal Sentiment Analysis", arXiv 2604.05704, ACL 2026. No public code exists;
what is known of the method comes from the abstract and secondary notes (REFERENCE.md).

Follows the paper's description:

- a per-modality Gaussian representation: a mean ``h_m`` and a variance ``sigma2_m`` learned
  WITHOUT labels by a heteroscedastic objective (aleatoric uncertainty);
- reliability ``r_m = 1 / (1 + sigma2_m)``;
- gated feature ``g_m = r_m * h_m + (1 - r_m) * p_m`` with a learnable prior ``p_m``, so an
  unreliable modality fades towards a learned default instead of towards noise;
- ``E = 8`` GLU experts with top-3 dispatch and a load-balancing loss;
- a router that mixes content and quality (reliability) gating;
- the ablation switches: no quality gate, no prior, dense routing.

This project's reading (not specified by what is public):

- the self-supervised target: the SAME encoder applied to the clean (pre-corruption) sample,
  without dropout and detached (stop-gradient); the loss is the Gaussian NLL
  ``0.5 * ((h - target)^2 * exp(-log_var) + log_var)`` averaged over feature dims, present
  modalities and samples. It needs ``batch.clean``, which the training loop sets only under
  corruption; without it the variance head learns only through the task loss;
- ``sigma2_m`` is a per-dimension vector ``(B, H)`` from a small variance head on ``h_m``,
  reduced to a scalar by the MEAN over dims before ``r_m = 1 / (1 + mean sigma2_m)``;
  log-variances are soft-clamped to ``(-5, 5)`` so ``exp(-log_var)`` stays bounded;
- an absent modality has ``r_m = 0`` exactly (its gated feature is the prior);
- the router: ``logits = Linear(concat(g_t, g_a, g_v)) + Linear([r_t, r_a, r_v])``; top-k
  keeps the k largest logits and renormalises them by a softmax over those k;
- the load-balancing loss is Switch-Transformer style ``E * sum_e f_e * P_e``;
- the head is dual-branch: a mean MLP giving the prediction and a log-variance branch trained
  by a Gaussian NLL of the labels (``sentiment_nll``, weight ``nll_weight``). The NLL sees the
  predicted mean and the expert output DETACHED, so it trains only the variance branch: the
  task loss the training loop chooses (e.g. L1) alone decides the prediction, and the NLL can
  be on by default without changing it.

Shapes: ``B`` samples, ``H = hidden``, ``E = num_experts``, ``F = expert_hidden``; the three
modalities in `MODALITIES` order (text, audio, vision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.models.base import ModelOutput, ModelSpec, MSAModel, register
from robustmsa.models.layers import MLP, ModalityEncoder, soft_clamp

# log-variances live in (-5, 5): sigma2 in (0.0067, 148), exp(-log_var) at most ~148.
LOG_VAR_BOUND = 5.0


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

    def __post_init__(self) -> None:
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


class GLUExperts(nn.Module):
    """``E`` GLU experts ``W2 (silu(W1 x) * (W3 x))``, all evaluated in one batched einsum.

    ``x`` (B, D) -> (B, E, d_out). Weights are stacked as (E, ...) parameters. Every expert runs
    on every sample and the router zeroes the unselected ones: at this size (E * D * F ~ 1e5
    weights) one dense einsum is cheaper than gathering per-sample weight copies (B * k * D * F
    floats) or looping over experts; a token-dispatch kernel would only pay off far larger.
    """

    def __init__(self, num_experts: int, d_in: int, d_hidden: int, d_out: int, dropout: float):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_experts, d_in, d_hidden))
        self.w3 = nn.Parameter(torch.empty(num_experts, d_in, d_hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, d_hidden, d_out))
        self.b1 = nn.Parameter(torch.empty(num_experts, d_hidden))
        self.b3 = nn.Parameter(torch.empty(num_experts, d_hidden))
        self.b2 = nn.Parameter(torch.empty(num_experts, d_out))
        self.dropout = nn.Dropout(dropout)
        # nn.Linear's default init, per expert: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        for w, b, fan_in in ((self.w1, self.b1, d_in), (self.w3, self.b3, d_in)):
            nn.init.uniform_(w, -(fan_in**-0.5), fan_in**-0.5)
            nn.init.uniform_(b, -(fan_in**-0.5), fan_in**-0.5)
        nn.init.uniform_(self.w2, -(d_hidden**-0.5), d_hidden**-0.5)
        nn.init.uniform_(self.b2, -(d_hidden**-0.5), d_hidden**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.einsum("bd,edf->bef", x, self.w1) + self.b1  # (B, E, F)
        value = torch.einsum("bd,edf->bef", x, self.w3) + self.b3  # (B, E, F)
        hidden = self.dropout(F.silu(gate) * value)
        return torch.einsum("bef,efo->beo", hidden, self.w2) + self.b2  # (B, E, d_out)


class QAMoE(MSAModel):
    """Quality-aware MoE; see the module docstring for what follows the paper.

    aux_losses (unweighted; a loss whose weight is 0 is not computed and its key is absent):
    ``uncertainty`` (training with ``batch.clean`` only), ``load_balance`` (top-k routing
    only: under dense routing ``f_e = 1/E`` and the loss is the constant 1),
    ``sentiment_nll`` (training only).

    extras (detached): ``reliability`` (B, 3) in `MODALITIES` order, 0 for absent modalities;
    ``routing_weights`` (B, E), rows summing to 1 with ``top_k`` nonzeros (all E if dense);
    ``prediction_log_var`` (B,) the predicted log-variance of the sentiment.
    """

    def __init__(self, config: QAMoEConfig, dims: dict[str, int]):
        super().__init__()
        self.config = config
        hid = config.hidden
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(dims[m], hid, config.dropout) for m in MODALITIES}
        )
        # Variance of each feature dim of h_m; its input is h_m itself (a later version may
        # add frame-level statistics such as the valid-frame fraction).
        self.variance_heads = nn.ModuleDict({m: MLP(hid, hid, hid) for m in MODALITIES})
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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodings ``h`` (B, 3, H) and presence (B, 3) bool; absent modalities encode to 0."""
        hs, present = [], []
        for m in MODALITIES:
            # present is authoritative: a frame mask left True on an absent modality is ignored.
            mask = batch.masks[m] & batch.present[m].unsqueeze(1)
            hs.append(self.encoders[m](batch.features[m], mask, deterministic=deterministic))
            present.append(batch.present[m])
        return torch.stack(hs, dim=1), torch.stack(present, dim=1)

    def _route(
        self, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Router logits (B, E) -> (weights (B, E), probs (B, E), top-k one-hot (B, E) | None)."""
        probs = logits.softmax(dim=-1)
        if self.config.dense_routing:
            return probs, probs, None
        top_logits, top_index = logits.topk(self.config.top_k, dim=-1)  # (B, k)
        weights = torch.zeros_like(logits).scatter(-1, top_index, top_logits.softmax(dim=-1))
        # Selection from the indices, not from weights > 0, so an underflowed weight still counts.
        selected = torch.zeros_like(logits).scatter(-1, top_index, 1.0)
        return weights, probs, selected

    def forward(self, batch: Batch) -> ModelOutput:
        cfg = self.config
        aux: dict[str, torch.Tensor] = {}

        h, present = self._encode(batch)  # (B, 3, H), (B, 3)
        log_var = torch.stack(
            [self.variance_heads[m](h[:, i]) for i, m in enumerate(MODALITIES)], dim=1
        )
        log_var = soft_clamp(log_var, LOG_VAR_BOUND)  # (B, 3, H)
        sigma2 = log_var.exp().mean(dim=-1)  # (B, 3): per-modality scalar variance
        reliability = torch.where(present, 1.0 / (1.0 + sigma2), torch.zeros_like(sigma2))

        if self.training and batch.clean is not None and cfg.uncertainty_weight > 0:
            with torch.no_grad():  # stop-gradient target: the clean sample's encoding
                target, clean_present = self._encode(batch.clean, deterministic=True)
            valid = (present & clean_present).to(h.dtype)  # (B, 3)
            nll = 0.5 * ((h - target).pow(2) * torch.exp(-log_var) + log_var)  # (B, 3, H)
            # clamp: a batch with no present modality contributes exactly 0, not NaN.
            aux["uncertainty"] = (nll.mean(dim=-1) * valid).sum() / valid.sum().clamp_min(1.0)

        keep = present.unsqueeze(-1)  # (B, 3, 1)
        if cfg.quality_gate:
            r = reliability.unsqueeze(-1)
            prior = self.prior.expand_as(h)
            gated = torch.where(keep, r * h + (1.0 - r) * prior, prior)  # (B, 3, H)
        else:
            gated = torch.where(keep, h, torch.zeros_like(h))
        u = gated.flatten(1)  # (B, 3H)

        logits = self.router_content(u)  # (B, E)
        if self.router_quality is not None:
            logits = logits + self.router_quality(reliability)
        weights, probs, selected = self._route(logits)
        if selected is not None and cfg.balance_weight > 0:
            # f_e: share of the B * k routing slots given to expert e; P_e: mean probability.
            fraction = selected.mean(dim=0) / cfg.top_k
            aux["load_balance"] = cfg.num_experts * (fraction * probs.mean(dim=0)).sum()

        expert_out = self.experts(u)  # (B, E, H)
        mixed = torch.einsum("be,beh->bh", weights, expert_out)  # (B, H)
        prediction = self.mean_head(mixed).squeeze(-1)  # (B,)
        pred_log_var = soft_clamp(
            self.log_var_head(mixed.detach()).squeeze(-1), LOG_VAR_BOUND
        )  # (B,)
        if self.training and cfg.nll_weight > 0:
            err2 = (batch.labels - prediction.detach()).pow(2)
            aux["sentiment_nll"] = (0.5 * (err2 * torch.exp(-pred_log_var) + pred_log_var)).mean()

        return ModelOutput(
            prediction=prediction,
            aux_losses=aux,
            extras={
                "reliability": reliability.detach(),
                "routing_weights": weights.detach(),
                "prediction_log_var": pred_log_var.detach(),
            },
        )


def _build(config: object, dims: dict[str, int]) -> QAMoE:
    if not isinstance(config, QAMoEConfig):
        raise TypeError(f"expected QAMoEConfig, got {type(config).__name__}")
    return QAMoE(config, dims)


register(ModelSpec(name="qa_moe", config_cls=QAMoEConfig, build=_build))
