"""How text enters a model: precomputed feature frames, or token ids through a `transformers`
encoder (DESIGN.md §4).

``kind: features`` (default) hands the batch's text frames through unchanged. ``kind:
transformer`` encodes ``batch.tokens`` with a BERT encoder built from a config (no download:
``HF_HUB_OFFLINE`` is set by the CLI and the tests), or loaded from a local directory
``pretrained_path`` holding a saved ``transformers`` BERT model (``save_pretrained``); the
encoder is frozen (``freeze: true``) or fine-tuned with the model. Token-level corruption (the
spectrum's random-token noise and ``[UNK]`` drops) has already happened in the batch.

Shapes: ``B`` samples, ``T`` text frames or ``L`` tokens, ``D = out_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from robustmsa.data.batch import Batch


@dataclass
class TextInputConfig:
    """``kind``: ``features`` or ``transformer``; the rest configures the transformer (a
    BERT-base vocabulary by default, small sizes so CPU runs stay fast)."""

    kind: Literal["features", "transformer"] = "features"
    pretrained_path: str | None = None
    freeze: bool = False
    vocab_size: int = 30522
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    max_tokens: int = 512

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden", "layers", "heads", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden: {self.hidden} is not divisible by heads={self.heads}")


class TextInput(nn.Module):
    """``forward(batch) -> (x (B, T|L, D), mask (B, T|L) bool)``; ``out_dim`` is ``D``
    (the text feature dim for ``features``, the encoder's hidden size for ``transformer``)."""

    def __init__(self, config: TextInputConfig, feature_dim: int):
        super().__init__()
        self.kind = config.kind
        self.encoder: nn.Module | None = None
        if config.kind == "features":
            self.out_dim = feature_dim
            return
        from transformers import BertConfig, BertModel

        if config.pretrained_path:
            encoder = BertModel.from_pretrained(
                config.pretrained_path, local_files_only=True, add_pooling_layer=False
            )
        else:
            encoder = BertModel(
                BertConfig(
                    vocab_size=config.vocab_size,
                    hidden_size=config.hidden,
                    num_hidden_layers=config.layers,
                    num_attention_heads=config.heads,
                    intermediate_size=4 * config.hidden,
                    max_position_embeddings=config.max_tokens,
                ),
                add_pooling_layer=False,
            )
        if config.freeze:
            encoder.requires_grad_(False)
        self.encoder = encoder
        self.out_dim = encoder.config.hidden_size

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is None:
            return batch.features["text"], batch.masks["text"]
        if batch.tokens is None:
            raise ValueError(
                "text.kind is 'transformer' but the batch has no token ids (the dataset has no "
                "text_ids column)"
            )
        present = batch.present["text"][:, None]
        mask = batch.token_mask & present  # an absent text has no tokens to attend
        # Every row keeps one attended position so that attention stays finite; its output is
        # masked out below.
        attend = mask.clone()
        attend[:, 0] = True
        out = self.encoder(input_ids=batch.tokens, attention_mask=attend.long())
        x = out.last_hidden_state * mask[..., None]
        return x, mask
