"""Late fusion: one unimodal predictor per modality, averaged over the present ones.

The effective-robustness reference baseline (MultiBench): effective robustness of a model is
its accuracy drop under corruption minus that of late fusion (docs/references.md, Metrics), so this
model must stay a plain, well-defined reference rather than a tuned competitor.

Per modality ``m``: ``h_m = encoder_m(x_m)`` (B, H) and an offset ``delta_m = head_m(h_m)``
(B,). The per-modality prediction is ``b + delta_m`` with one learned bias ``b`` shared by all
modalities, and the prediction is their mean over the PRESENT modalities, i.e.
``b + mean_{m present} delta_m``; with no modality present it is ``b`` alone, the learned label
prior. Writing the fallback as a shared bias (rather than a separate parameter chosen by
``torch.where``) keeps it trained by every sample, not only by the rare all-absent ones.

Text enters through `TextInput` (config field ``text``): precomputed feature frames, or token
ids through a `transformers` encoder. Shapes: ``B`` samples, ``H = hidden``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.models.base import ModelOutput, ModelSpec, MSAModel, register
from robustmsa.models.layers import MLP, ModalityEncoder
from robustmsa.models.text_input import TextInput, TextInputConfig, coerce_text_config


@dataclass
class LateFusionConfig:
    hidden: int = 64
    dropout: float = 0.1
    text: TextInputConfig = field(default_factory=TextInputConfig)

    def __post_init__(self) -> None:
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int):
            raise ValueError(f"hidden: expected an int, got {self.hidden!r}")
        if self.hidden < 1:
            raise ValueError(f"hidden: must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        self.text = coerce_text_config(self.text)


class LateFusion(MSAModel):
    """Average of unimodal predictions over present modalities; see the module docstring.

    extras: ``per_modality_prediction`` (B, 3) in `MODALITIES` order (detached; the value for
    an absent modality is what its head makes of an all-zero encoding and is not used).
    """

    def __init__(self, config: LateFusionConfig, dims: dict[str, int]):
        super().__init__()
        self.config = config
        self.text_input = TextInput(config.text, dims["text"])
        in_dims = {m: dims[m] for m in MODALITIES} | {"text": self.text_input.out_dim}
        self.encoders = nn.ModuleDict(
            {m: ModalityEncoder(in_dims[m], config.hidden, config.dropout) for m in MODALITIES}
        )
        self.heads = nn.ModuleDict(
            {m: MLP(config.hidden, config.hidden, 1, config.dropout) for m in MODALITIES}
        )
        self.prior = nn.Parameter(torch.zeros(()))  # b: the label prior

    def forward_standardised(self, batch: Batch) -> ModelOutput:
        deltas, present = [], []
        for m in MODALITIES:
            if m == "text":
                x, mask = self.text_input(batch)
            else:
                x, mask = batch.features[m], batch.masks[m]
            # present is authoritative: a frame mask left True on an absent modality is ignored.
            mask = mask & batch.present[m].unsqueeze(1)
            h = self.encoders[m](x, mask)  # (B, H)
            deltas.append(self.heads[m](h).squeeze(-1).float())  # (B,)
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


SEARCH_SPACE: tuple[dict, ...] = (
    # No reported value: MultiBench's affect late fusion concatenates GRU encodings of per-
    # modality widths (64, 128, 512), a different model from this averaged one.
    {"name": "model.params.hidden", "type": "categorical", "choices": [32, 64, 128]},
    {"name": "model.params.dropout", "type": "float", "low": 0.0, "high": 0.3},
)

register(
    ModelSpec(
        name="late_fusion", config_cls=LateFusionConfig, build=_build, search_space=SEARCH_SPACE
    )
)
