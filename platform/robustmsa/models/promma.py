"""ProMMA: prompt-based missing-modality adaptation with evaluation before generation.

Paper: "Evaluation Before Generation: A Paradigm for Robust Multimodal Sentiment Analysis with
Missing Modalities", arXiv 2604.05558, ICME 2026. Its public repository holds only a README,
and what is known of the method is the abstract (docs/references.md); the numbers come from its
nearest public relative MPLMM (prompts of length 16 and width 30 on a MulT backbone
pretrained on complete data).

Follows the paper's description (the four named modules):

- **Missing Modality Evaluator**: a reference model trained on complete data yields pseudo
  labels; for each missing modality the evaluator scores whether imputing (generating) it from
  the available ones improves the fit to the pseudo label, and the modality is imputed only
  when it does (``evaluator``);
- **modality-invariant prompt disentanglement**: learnable shared prompts decomposed into
  per-modality private prompts (``disentanglement``);
- **dynamic prompt weighting**: prompt weights from a mutual-information estimate between
  cross-attention outputs (``dynamic_weighting``);
- **multi-level prompt dynamic connection**: shared prompts added residually to the
  self-attention outputs at every level (``residual_prompts``);
- a cross-modal transformer backbone (MulT, `robustmsa.models.mult`, whose blocks are reused);
  prompt length 16 and width 30 (MPLMM's numbers) as defaults.

This project's reading (nothing of it is public):

- **two stages** (`training_stages`): ``reference`` trains the plain MulT backbone on complete
  (uncorrupted) data for ``reference_fraction`` of the epochs; entering ``full`` snapshots the
  backbone's weights into frozen buffers, the reference model, and ``full`` trains everything
  (the backbone is fine-tuned; ``freeze_backbone`` keeps it fixed, MPLMM style) under the
  study's corruption. Only ``full`` epochs can be the best epoch. A model used outside the
  staged loop (or with ``reference_fraction: 0``) has no trained reference and uses the true
  labels as its pseudo labels;
- **imputation** (generation) of modality ``m``: ``impute_length`` learned queries attend, by
  one crossmodal layer, to the available OTHER modalities' projected sequences, then a linear
  map; trained by ``imputation``, the MSE between the mean imputed token and the masked mean of
  the projected CLEAN modality (``batch.clean``, else the batch itself; stop-gradient target),
  on every sample whose clean ``m`` exists (present or not in the corrupted batch). Imputed
  tokens are prepended to ``m``'s sequence and count as valid frames only where the gate is on;
- **evaluator**: per modality a small MLP on detached inputs (the masked means and presence
  flags of the two other modalities and the mean imputed token) gives a score ``s_m``;
  ``m`` is imputed iff it is missing and ``s_m > evaluator_threshold`` (a hard gate, the same
  in training and evaluation). Its target, in training: with pseudo labels ``y~`` (the
  reference on the clean batch), the current model's prediction without any imputation
  ``p_0`` and with only ``m`` imputed ``p_m`` (one batched, no-grad, dropout-free pass of the 4
  variants), the target is ``1[|p_m - y~| < |p_0 - y~|]``, a binary cross-entropy
  (``evaluator``) over the samples where ``m`` is missing. ``evaluator: false`` imputes every
  missing modality (generation without evaluation);
- **prompts**: a shared prompt ``P_s`` (L_p, D); private prompts ``P_m = W_m P_s + b_m`` (a
  per-modality linear map of the shared prompt), kept apart by the orthogonality loss
  ``prompt_orthogonality``: the squared cosine between the prompts' tokens at the same
  position, averaged over positions and over the pairs shared/private and private/private
  (MISA's difference loss correlates features across positions instead, which for private
  prompts that are a per-token map of the shared one is minimised only by degenerate,
  position-constant private prompts); without disentanglement every modality uses ``P_s``.
  The prompt tokens of target ``t`` are ``U_t(w_t * P_t)`` (``U_t`` a linear map D -> 2D)
  prepended to its self-attention sequence and always valid: an absent target is
  represented by its prompts;
- **MI weighting**: for target ``t``, the pooled outputs ``u1, u2`` of its two cross-attention
  blocks; a critic ``T_t(u1, u2)`` trained by the Jensen-Shannon bound (Hjelm et al., Deep
  InfoMax; ``mi`` = ``softplus(-T(u1, u2)) + softplus(T(u1, u2'))`` with ``u2'`` from another
  sample of the batch, a rolled batch) on detached inputs, so it measures and does not shape
  the representation. JSD rather than InfoNCE: it is stable with the small batches used here
  (InfoNCE's estimate is capped at ``log B`` and needs many negatives), and its optimal critic
  is the pointwise log density ratio, a per-sample MI estimate ``I_t = T_t(u1, u2)``. The weight
  is ``w_t = 2 sigmoid(a_t I_t + b_t + c_t . v)`` (``I_t`` detached; ``v`` (3,) the
  availability of the three modalities, 1 or 0; ``a_t, b_t, c_t`` learned from 0, so ``w_t =
  1`` at initialisation); off: ``w_t = 1``. Samples where ``t`` or a source is unavailable get
  ``I_t = 0`` and no MI loss: the MI estimate needs both cross-attention inputs. The paper does
  not say what the weight is then; without ``c_t`` it would be one learned constant per target
  whatever is missing, so the weighting could not tell which modality is gone, which is the
  point of weighting prompts under missing modalities. ``c_t`` makes it depend on which
  modalities are present, also where the MI is defined;
- **residual connections**: after self-attention layer ``l`` of target ``t``, the prompt
  positions get ``+ r_{t,l} U_t(P_s)`` with learned scalars ``r`` (initial 0.5);
- ``prompts: false`` removes all three prompt modules (disentanglement, weighting and
  residual connections then have no effect).

Shapes: ``B`` samples, ``T_m`` frames, ``D = dim``, ``L_p = prompt_length``,
``L_i = impute_length``; modalities in `MODALITIES` order (text, audio, vision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.models.base import ModelOutput, ModelSpec, MSAModel, Stage, register
from robustmsa.models.layers import MLP, masked_mean
from robustmsa.models.mult import MulTBackbone, MulTConfig, TransformerStack, source_modalities

STAGES: tuple[str, ...] = ("reference", "full")


@dataclass
class ProMMAConfig(MulTConfig):
    """MulT's fields (the backbone) plus ProMMA's; see the module docstring."""

    prompt_length: int = 16
    impute_length: int = 8
    reference_fraction: float = 0.3  # share of training.epochs for the reference stage
    freeze_backbone: bool = False  # True: the full stage trains only ProMMA's modules
    evaluator_threshold: float = 0.5
    orthogonality_weight: float = 0.1  # "prompt_orthogonality" (MISA's diff weight)
    mi_weight: float = 0.1  # "mi": the JSD critic
    imputation_weight: float = 1.0  # "imputation" (MISA's reconstruction weight)
    evaluator_weight: float = 1.0  # "evaluator": BCE of the evaluator's decisions
    prompts: bool = True
    disentanglement: bool = True
    dynamic_weighting: bool = True
    residual_prompts: bool = True
    evaluator: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("prompt_length", "impute_length"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value}")
        if not 0.0 <= self.reference_fraction < 1.0:
            raise ValueError(
                f"reference_fraction: must be in [0, 1), got {self.reference_fraction}"
            )
        if not 0.0 < self.evaluator_threshold < 1.0:
            raise ValueError(
                f"evaluator_threshold: must be in (0, 1), got {self.evaluator_threshold}"
            )
        for name in ("orthogonality_weight", "mi_weight", "imputation_weight", "evaluator_weight"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{name}: must be a finite number >= 0, got {value}")


class Snapshot(nn.Module):
    """Frozen copies of a module's trainable parameters, held as (persistent) buffers.

    Buffers, not parameters: no optimizer or gradient check sees them, and they travel with
    the state dict and the device. `tensors` maps the module's parameter names to them, for
    ``torch.func.functional_call``. Frozen parameters (a frozen text encoder) are not copied:
    they cannot drift, so the live ones serve.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        params = dict(module.named_parameters())
        for n in self.names:
            self.register_buffer(n.replace(".", "__"), params[n].detach().clone())

    @torch.no_grad()
    def copy_from(self, module: nn.Module) -> None:
        params = dict(module.named_parameters())
        for n in self.names:
            getattr(self, n.replace(".", "__")).copy_(params[n])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n.replace(".", "__")) for n in self.names}


def orthogonality(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Token-wise orthogonality of two prompts (L, D): the mean over positions of the squared
    cosine between ``a[n]`` and ``b[n]`` (elementwise ops: float32 under autocast).

    Not MISA's form (squared correlations of features across positions): with private prompts
    a per-token affine map of the shared one, that form has only degenerate minima (private
    prompts constant over positions), while this one is 0 for, e.g., skew-symmetric maps.
    """
    a, b = a.float(), b.float()
    cos = (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)
    return cos.pow(2).mean()


def masked_average(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; exactly 0 (with a zero gradient) when none is set."""
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


class ProMMA(MSAModel):
    """ProMMA; see the module docstring.

    aux_losses (training only, unweighted; a loss whose weight or module is off is absent):
    ``imputation``, ``evaluator`` (0 with a zero gradient when no modality is missing),
    ``prompt_orthogonality``, ``mi``. In the ``reference`` stage: none.

    extras (detached), full stage: ``imputed`` (B, 3) 1.0 where a modality was imputed;
    ``evaluator_score`` (B, 3) (with the evaluator); ``prompt_weight`` (B, 3) and
    ``pointwise_mi`` (B, 3) (with prompts; ``pointwise_mi`` only with dynamic weighting);
    in training ``pseudo_label`` (B,), ``evaluator_target`` and ``evaluator_target_mask``
    (B, 3). Reference stage: ``representation_norm`` (B, 3) as MulT.
    """

    # The presence term of the prompt weights starts at 0: no effect, as before it existed.
    neutral_additions = (*MSAModel.neutral_additions, "mi_presence")

    def __init__(self, config: ProMMAConfig, dims: dict[str, int]):
        super().__init__()
        self.config = config
        c, d = config, config.dim
        n = len(MODALITIES)
        self.stage = "full"
        self.backbone = MulTBackbone(config, dims)
        self.reference = Snapshot(self.backbone)
        self.register_buffer("reference_trained", torch.zeros((), dtype=torch.bool))

        self.impute_queries = nn.Parameter(torch.randn(n, c.impute_length, d))
        self.imputers = nn.ModuleDict(
            {
                m: TransformerStack(d, c.heads, 1, c.dropout, c.attn_dropout, True)
                for m in MODALITIES
            }
        )
        self.impute_out = nn.ModuleDict({m: nn.Linear(d, d) for m in MODALITIES})
        self.evaluator_heads = (
            nn.ModuleDict({m: MLP(3 * d + 2, d, 1) for m in MODALITIES}) if c.evaluator else None
        )

        self.shared_prompt = self.disentanglers = self.prompt_up = self.critics = None
        self.mi_scale = self.mi_bias = self.mi_presence = self.residual_scale = None
        if c.prompts:
            self.shared_prompt = nn.Parameter(torch.randn(c.prompt_length, d))
            self.prompt_up = nn.ModuleDict({m: nn.Linear(d, 2 * d) for m in MODALITIES})
            if c.disentanglement:
                self.disentanglers = nn.ModuleDict({m: nn.Linear(d, d) for m in MODALITIES})
            if c.dynamic_weighting:
                self.critics = nn.ModuleDict({m: MLP(2 * d, d, 1) for m in MODALITIES})
                self.mi_scale = nn.Parameter(torch.zeros(n))
                self.mi_bias = nn.Parameter(torch.zeros(n))
                # (target, modality): how the availability of each modality moves the weight.
                self.mi_presence = nn.Parameter(torch.zeros(n, n))
            if c.residual_prompts:
                self.residual_scale = nn.Parameter(torch.full((n, c.self_layers), 0.5))

    # --- stages -----------------------------------------------------------------------------

    def training_stages(self) -> list[Stage]:
        """``reference`` (complete data, backbone only, never selected) then ``full``; none when
        ``reference_fraction`` is 0 (the model trains as a single-stage one)."""
        c = self.config
        if c.reference_fraction == 0:
            return []
        full_train = None
        if c.freeze_backbone:
            full_train = tuple(
                dict.fromkeys(
                    n.split(".")[0]
                    for n, _ in self.named_parameters()
                    if not n.startswith("backbone.")
                )
            )
        return [
            Stage(
                "reference",
                fraction=c.reference_fraction,
                sampler="complete",
                train=("backbone",),
                select=False,
            ),
            Stage("full", train=full_train),
        ]

    def set_stage(self, name: str) -> None:
        """Switch stage; entering ``full`` from ``reference`` snapshots the reference model."""
        if name not in STAGES:
            raise ValueError(f"stage: unknown stage {name!r} (known: {list(STAGES)})")
        if name == "full" and self.stage == "reference":
            self.reference.copy_from(self.backbone)
            self.reference_trained.fill_(True)
        self.stage = name

    def aux_loss_weights(self) -> dict[str, float]:
        c = self.config
        return {
            "imputation": c.imputation_weight,
            "evaluator": c.evaluator_weight,
            "prompt_orthogonality": c.orthogonality_weight,
            "mi": c.mi_weight,
        }

    # --- pieces -----------------------------------------------------------------------------

    def _impute(
        self, seqs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], det: bool
    ) -> dict[str, torch.Tensor]:
        """``{m: (B, L_i, D)}``: each modality generated from the two others' sequences."""
        out = {}
        for i, m in enumerate(MODALITIES):
            others = source_modalities(m)
            source = torch.cat([seqs[o] for o in others], dim=1)
            source_mask = torch.cat([masks[o] for o in others], dim=1)
            b = source.shape[0]
            queries = self.impute_queries[i].expand(b, -1, -1)
            query_mask = source_mask.new_ones(b, queries.shape[1])
            h = self.imputers[m](queries, query_mask, source, source_mask, deterministic=det)
            out[m] = self.impute_out[m](h)
        return out

    def _evaluator_logits(
        self,
        seqs: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        imputed: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """(B, 3) float32 logits ``s_m``, from detached inputs (only its BCE trains it)."""
        logits = []
        for m in MODALITIES:
            parts = []
            for o in source_modalities(m):
                parts.append(masked_mean(seqs[o].detach(), masks[o]))
                parts.append(masks[o].any(dim=1, keepdim=True).to(parts[-1].dtype))
            parts.append(imputed[m].detach().mean(dim=1).to(parts[0].dtype))
            logits.append(self.evaluator_heads[m](torch.cat(parts, dim=-1)).squeeze(-1))
        return torch.stack(logits, dim=1).float()

    def _prompts(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Shared prompt (L_p, D) and the private prompts ``{m: (L_p, D)}``."""
        shared = self.shared_prompt
        if self.disentanglers is None:
            return shared, dict.fromkeys(MODALITIES, shared)
        return shared, {m: self.disentanglers[m](shared) for m in MODALITIES}

    def _fuse_all(
        self,
        seqs: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        imputed: dict[str, torch.Tensor],
        gates: torch.Tensor,
        det: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Prediction (B,) with the modalities imputed where ``gates`` (B, 3) bool, and what
        the losses and extras need (critic scores, weights, availability)."""
        c = self.config
        full_seqs, full_masks = {}, {}
        for i, m in enumerate(MODALITIES):
            slots = gates[:, i : i + 1].expand(-1, imputed[m].shape[1])
            full_seqs[m] = torch.cat([imputed[m].to(seqs[m].dtype), seqs[m]], dim=1)
            full_masks[m] = torch.cat([slots, masks[m]], dim=1)
        avail = torch.stack([full_masks[m].any(dim=1) for m in MODALITIES], dim=1)  # (B, 3)
        crossed = self.backbone.crossmodal(full_seqs, full_masks, deterministic=det)
        info: dict[str, torch.Tensor] = {"available": avail}
        if c.prompts:
            shared, private = self._prompts()
        pooled, weights, t_pos, t_neg, mi_valid = [], [], [], [], []
        b = gates.shape[0]
        for i, tgt in enumerate(MODALITIES):
            z1, z2 = crossed[tgt]
            prefix = inject = None
            if c.prompts:
                weight = gates.new_ones(b, dtype=torch.float32)
                if self.critics is not None:
                    u1 = masked_mean(z1, full_masks[tgt]).detach()
                    u2 = masked_mean(z2, full_masks[tgt]).detach()
                    pos = self.critics[tgt](torch.cat([u1, u2], dim=-1)).squeeze(-1).float()
                    neg = self.critics[tgt](torch.cat([u1, u2.roll(1, 0)], dim=-1))
                    valid = avail.all(dim=1)  # the target and both sources are available
                    t_pos.append(pos)
                    t_neg.append(neg.squeeze(-1).float())
                    mi_valid.append(valid)
                    mi = torch.where(valid, pos.detach(), torch.zeros_like(pos))
                    presence = avail.float() @ self.mi_presence[i]  # (B,)
                    weight = 2.0 * torch.sigmoid(self.mi_scale[i] * mi + self.mi_bias[i] + presence)
                weights.append(weight)
                tokens = weight[:, None, None] * private[tgt]  # (B, L_p, D)
                prefix = self.prompt_up[tgt](tokens)  # (B, L_p, 2D)
                if self.residual_scale is not None:
                    lp, up_shared = c.prompt_length, self.prompt_up[tgt](shared)
                    scale = self.residual_scale[i]

                    def inject(level, x, lp=lp, up=up_shared, scale=scale):
                        head = x[:, :lp] + scale[level] * up.to(x.dtype)
                        return torch.cat([head, x[:, lp:]], dim=1)

            pooled.append(
                self.backbone.fuse(
                    tgt,
                    torch.cat([z1, z2], dim=-1),
                    full_masks[tgt],
                    prefix=prefix,
                    inject=inject,
                    deterministic=det,
                )
            )
        prediction = self.backbone.head(torch.stack(pooled, dim=1).flatten(1), deterministic=det)
        if weights:
            info["prompt_weight"] = torch.stack(weights, dim=1)
        if t_pos:
            info["t_pos"] = torch.stack(t_pos, dim=1)
            info["t_neg"] = torch.stack(t_neg, dim=1)
            info["mi_valid"] = torch.stack(mi_valid, dim=1)
        return prediction, info

    @torch.no_grad()
    def _pseudo_labels(self, batch: Batch) -> torch.Tensor:
        """The reference model's predictions on the clean batch (B,); the labels when no
        reference was trained."""
        if not bool(self.reference_trained):
            return batch.labels.float()
        clean = batch.clean if batch.clean is not None else batch
        prediction, _ = functional_call(
            self.backbone, self.reference.tensors(), (clean,), {"deterministic": True}
        )
        return prediction.float()

    @torch.no_grad()
    def _evaluator_targets(
        self,
        batch: Batch,
        seqs: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        imputed: dict[str, torch.Tensor],
        missing: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (B, 3) float: imputing only ``m`` brings the prediction closer to the
        pseudo label (B,). Dropout-free passes: nothing imputed, on the whole batch; then, for
        each (sample, missing modality) pair, that modality alone imputed, all pairs stacked in
        one pass. A modality that is present has target 0 (imputing it changes nothing), so
        only the missing ones are run: under the training spectrum few are missing, and this
        pass used to run the batch 4 times over."""
        pseudo = self._pseudo_labels(batch)
        b, n = missing.shape
        none, _ = self._fuse_all(seqs, masks, imputed, missing.new_zeros(b, n), True)
        base_error = (none.float() - pseudo).abs()  # (B,)
        target = torch.zeros(b, n, device=missing.device)
        rows, mods = missing.nonzero(as_tuple=True)  # (P,) each: the missing pairs
        if rows.numel():
            gates = F.one_hot(mods, n).bool()  # (P, 3): only that modality imputed

            def take(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
                return {m: v.index_select(0, rows) for m, v in t.items()}

            preds, _ = self._fuse_all(take(seqs), take(masks), take(imputed), gates, True)
            error = (preds.float() - pseudo.index_select(0, rows)).abs()  # (P,)
            target[rows, mods] = (error < base_error.index_select(0, rows)).float()
        return target, pseudo

    # --- forward ----------------------------------------------------------------------------

    def forward_standardised(self, batch: Batch) -> ModelOutput:
        if self.stage == "reference":
            prediction, pooled = self.backbone(batch)
            return ModelOutput(
                prediction=prediction,
                extras={"representation_norm": pooled.detach().float().norm(dim=-1)},
            )
        c = self.config
        seqs, masks = self.backbone.encode(batch)
        missing = ~torch.stack([masks[m].any(dim=1) for m in MODALITIES], dim=1)  # (B, 3)
        imputed = self._impute(seqs, masks, False)
        extras: dict[str, torch.Tensor] = {}
        logits = None
        if self.evaluator_heads is not None:
            logits = self._evaluator_logits(seqs, masks, imputed)
            score = torch.sigmoid(logits)
            gates = missing & (score > c.evaluator_threshold)
            extras["evaluator_score"] = score.detach()
        else:
            gates = missing
        prediction, info = self._fuse_all(seqs, masks, imputed, gates, False)
        extras["imputed"] = gates.float()
        if "prompt_weight" in info:
            extras["prompt_weight"] = info["prompt_weight"].detach()
        if "t_pos" in info:
            extras["pointwise_mi"] = torch.where(
                info["mi_valid"], info["t_pos"], torch.zeros_like(info["t_pos"])
            ).detach()

        aux: dict[str, torch.Tensor] = {}
        if self.training:
            if c.imputation_weight > 0:
                aux["imputation"] = self._imputation_loss(batch, imputed)
            if logits is not None and c.evaluator_weight > 0:
                target = torch.zeros_like(logits)
                if bool(missing.any()):
                    target, pseudo = self._evaluator_targets(batch, seqs, masks, imputed, missing)
                    extras["pseudo_label"] = pseudo
                bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
                aux["evaluator"] = masked_average(bce, missing)
                extras["evaluator_target"] = target
                extras["evaluator_target_mask"] = missing.float()
            if self.disentanglers is not None and c.orthogonality_weight > 0:
                shared, private = self._prompts()
                prompts = [shared, *(private[m] for m in MODALITIES)]
                pairs = [
                    orthogonality(prompts[i], prompts[j])
                    for i in range(len(prompts))
                    for j in range(i + 1, len(prompts))
                ]
                aux["prompt_orthogonality"] = torch.stack(pairs).mean()
            if "t_pos" in info and c.mi_weight > 0:
                valid = info["mi_valid"]
                neg_valid = valid & valid.roll(1, 0)
                aux["mi"] = masked_average(F.softplus(-info["t_pos"]), valid) + masked_average(
                    F.softplus(info["t_neg"]), neg_valid
                )
        return ModelOutput(prediction=prediction, aux_losses=aux, extras=extras)

    def _imputation_loss(self, batch: Batch, imputed: dict[str, torch.Tensor]) -> torch.Tensor:
        """MSE of the mean imputed token to the clean modality's masked-mean projection."""
        clean = batch.clean if batch.clean is not None else batch
        with torch.no_grad():
            clean_seqs, clean_masks = self.backbone.encode(clean, deterministic=True)
        errors, valid = [], []
        for m in MODALITIES:
            target = masked_mean(clean_seqs[m], clean_masks[m]).float()
            errors.append((imputed[m].float().mean(dim=1) - target).pow(2).mean(dim=-1))
            valid.append(clean_masks[m].any(dim=1))
        return masked_average(torch.stack(errors, dim=1), torch.stack(valid, dim=1))


def _build(config: object, dims: dict[str, int]) -> ProMMA:
    if not isinstance(config, ProMMAConfig):
        raise TypeError(f"expected ProMMAConfig, got {type(config).__name__}")
    return ProMMA(config, dims)


SEARCH_SPACE: tuple[dict, ...] = (
    # ProMMA reports none of these in the sources we hold; the numbers are MPLMM's code
    # (prompt length 16, prompt width 30 = its MulT width with 5 heads, 5 levels, lr 1e-3), all
    # strictly inside (docs/references.md).
    {"name": "model.params.prompt_length", "type": "int", "low": 4, "high": 32, "log": True},
    {"name": "model.params.dim", "type": "categorical", "choices": [10, 30, 60]},  # width
    # Not reported in the sources we hold: the imputation length, the reference stage's share,
    # the loss weights and the evaluator's threshold (this project's reading).
    {"name": "model.params.impute_length", "type": "int", "low": 2, "high": 16, "log": True},
    {"name": "model.params.layers", "type": "int", "low": 1, "high": 6},  # MPLMM: 5
    {"name": "model.params.reference_fraction", "type": "float", "low": 0.1, "high": 0.5},
    {"name": "model.params.mi_weight", "type": "float", "low": 0.01, "high": 1.0, "log": True},
    {
        "name": "model.params.orthogonality_weight",
        "type": "float",
        "low": 0.01,
        "high": 1.0,
        "log": True,
    },
    {
        "name": "model.params.imputation_weight",
        "type": "float",
        "low": 0.1,
        "high": 3.0,
        "log": True,
    },
    {
        "name": "model.params.evaluator_weight",
        "type": "float",
        "low": 0.1,
        "high": 3.0,
        "log": True,
    },
    {"name": "model.params.evaluator_threshold", "type": "float", "low": 0.3, "high": 0.7},
    {"name": "training.lr", "type": "float", "low": 3.0e-4, "high": 3.0e-3, "log": True},  # 1e-3
)

register(ModelSpec(name="promma", config_cls=ProMMAConfig, build=_build, search_space=SEARCH_SPACE))
