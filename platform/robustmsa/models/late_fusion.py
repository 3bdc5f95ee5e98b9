"""Late fusion: one unimodal predictor per modality, averaged over the present ones.

The effective-robustness reference baseline (MultiBench): effective robustness of a model is
its accuracy drop under corruption minus that of late fusion (REFERENCE.md, Metrics), so this
model must stay a plain, well-defined reference rather than a tuned competitor.

Per modality ``m``: ``h_m = encoder_m(x_m)`` (B, H) and an offset ``delta_m = head_m(h_m)``
(B,). The per-modality prediction is ``b + delta_m`` with one learned bias ``b`` shared by all
modalities, and the prediction is their mean over the PRESENT modalities, i.e.
``b + mean_{m present} delta_m``; with no modality present it is ``b`` alone, the learned label
prior. Writing the fallback as a shared bias (rather than a separate parameter chosen by
``torch.where``) keeps it trained by every sample, not only by the rare all-absent ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.models.base import ModelOutput, ModelSpec, MSAModel, register
from robustmsa.models.layers import MLP, ModalityEncoder


@dataclass
class LateFusionConfig:
    hidden: int = 64
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"hidden: must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")


class LateFusion(MSAModel):
    """Average of unimodal predictions over present modalities; see the module docstring.

    extras: ``per_modality_prediction`` (B, 3) in `MODALITIES` order (detached; the value for
    an absent modality is what its head makes of an all-zero encoding and is not used).
    """

    def __init__(self, config: LateFusionConfig, dims: dict[str, int]):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(dims[m], config.hidden, config.dropout) for m in MODALITIES}
        )
        self.heads = nn.ModuleDict(
            {m: MLP(config.hidden, config.hidden, 1, config.dropout) for m in MODALITIES}
        )
        self.prior = nn.Parameter(torch.zeros(()))  # b: the label prior

    def forward(self, batch: Batch) -> ModelOutput:
        deltas, present = [], []
        for m in MODALITIES:
            # present is authoritative: a frame mask left True on an absent modality is ignored.
            mask = batch.masks[m] & batch.present[m].unsqueeze(1)
            h = self.encoders[m](batch.features[m], mask)  # (B, H)
            deltas.append(self.heads[m](h).squeeze(-1))  # (B,)
            present.append(batch.present[m])
        delta = torch.stack(deltas, dim=1)  # (B, 3)
        weight = torch.stack(present, dim=1).to(delta.dtype)  # (B, 3)
        count = weight.sum(dim=1).clamp_min(1.0)  # (B,); all-absent rows sum to 0 anyway
        prediction = self.prior + (delta * weight).sum(dim=1) / count  # (B,)
        return ModelOutput(
            prediction=prediction,
            extras={"per_modality_prediction": (self.prior + delta).detach()},
        )


def _build(config: object, dims: dict[str, int]) -> LateFusion:
    if not isinstance(config, LateFusionConfig):
        raise TypeError(f"expected LateFusionConfig, got {type(config).__name__}")
    return LateFusion(config, dims)


register(ModelSpec(name="late_fusion", config_cls=LateFusionConfig, build=_build))
