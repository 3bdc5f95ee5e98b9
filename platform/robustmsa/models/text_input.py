"""How text enters a model: precomputed feature frames, or token ids through a `transformers`
encoder (docs/architecture.md §4).

``kind: features`` (default) hands the batch's text frames through unchanged. ``kind:
transformer`` encodes ``batch.tokens`` with a BERT encoder built from a config (no download:
``HF_HUB_OFFLINE`` is set by the CLI and the tests), or loaded from a local directory
``pretrained_path`` holding a saved ``transformers`` BERT model (``save_pretrained``); the
encoder is frozen (``freeze: true``) or fine-tuned with the model. Token-level corruption (the
spectrum's random-token noise and ``[UNK]`` drops) has already happened in the batch.

- A loaded encoder keeps its own sizes: ``vocab_size``, ``hidden``, ``layers``, ``heads`` and
  ``max_tokens`` only shape an encoder built from the config.
- A frozen encoder has no trainable parameter, runs without autograd and stays in eval mode
  (no dropout) whatever the model's mode: a frozen BERT is a fixed feature extractor.
- Token sequences longer than the encoder's position table are cut to its length (the
  truncation a BERT tokenizer applies); a token id outside the vocabulary is an error.
- ``present["text"]`` governs the tokens: an absent text encodes to all-zero frames with an
  all-False mask, whatever its token ids.

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
        if self.kind not in ("features", "transformer"):
            raise ValueError(f"kind: expected 'features' or 'transformer', got {self.kind!r}")
        for name in ("vocab_size", "hidden", "layers", "heads", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden: {self.hidden} is not divisible by heads={self.heads}")
        if self.pretrained_path is not None and self.kind != "transformer":
            # A user who names a BERT directory but forgets `kind` would otherwise train on
            # the text features without noticing.
            raise ValueError(
                f"pretrained_path: only used with kind 'transformer', got kind {self.kind!r}"
            )
        if self.pretrained_path is not None and not self.pretrained_path.strip():
            raise ValueError("pretrained_path: must be a directory path or null, got ''")


def coerce_text_config(value: object) -> TextInputConfig:
    """``value`` as a `TextInputConfig` (a mapping is accepted, for direct construction of a
    model config in Python; YAML configs are converted by `robustmsa.config` already).
    Errors name the field: ``text.<field>: ...``."""
    if isinstance(value, TextInputConfig):
        return value
    if isinstance(value, dict):
        try:
            return TextInputConfig(**value)
        except TypeError as exc:
            raise ValueError(f"text: {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"text.{exc}") from exc
    raise ValueError(f"text: expected a TextInputConfig or a mapping, got {value!r}")


class TextInput(nn.Module):
    """``forward(batch) -> (x (B, T|L, D), mask (B, T|L) bool)``; ``out_dim`` is ``D``
    (the text feature dim for ``features``, the encoder's hidden size for ``transformer``).

    ``forward(batch, deterministic=True)`` runs the encoder without dropout even in training
    mode (for stop-gradient targets such as QA-MoE's clean encoding). The features path is
    always deterministic.
    """

    def __init__(self, config: TextInputConfig, feature_dim: int):
        super().__init__()
        self.kind = config.kind
        self.frozen = bool(config.freeze) and config.kind == "transformer"
        self.encoder: nn.Module | None = None
        if config.kind == "features":
            self.out_dim = feature_dim
            return
        from transformers import BertConfig, BertModel

        if config.pretrained_path:
            try:
                encoder = BertModel.from_pretrained(
                    config.pretrained_path, local_files_only=True, add_pooling_layer=False
                )
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"pretrained_path: cannot load a BERT model from "
                    f"{config.pretrained_path!r} ({exc})"
                ) from exc
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
        if self.frozen:
            encoder.requires_grad_(False)
            encoder.eval()
        self.encoder = encoder
        self.out_dim = int(encoder.config.hidden_size)
        self.max_tokens = int(encoder.config.max_position_embeddings)
        self.vocab_size = int(encoder.config.vocab_size)

    def train(self, mode: bool = True) -> TextInput:
        super().train(mode)
        if self.frozen and self.encoder is not None:
            self.encoder.eval()  # a frozen encoder never runs dropout
        return self

    def forward(
        self, batch: Batch, *, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is None:
            return batch.features["text"], batch.masks["text"]
        if batch.tokens is None:
            raise ValueError(
                "text.kind is 'transformer' but the batch has no token ids (the dataset has no "
                "text_ids column)"
            )
        tokens, token_mask = batch.tokens, batch.token_mask
        if tokens.shape[1] > self.max_tokens:
            tokens, token_mask = tokens[:, : self.max_tokens], token_mask[:, : self.max_tokens]
        if tokens.shape[1] == 0:  # no token position at all: nothing to encode
            b = tokens.shape[0]
            x = torch.zeros(b, 0, self.out_dim, device=tokens.device)
            return x, torch.zeros(b, 0, dtype=torch.bool, device=tokens.device)
        if bool(((tokens < 0) | (tokens >= self.vocab_size)).any()):
            # Checked here (one host sync): on a GPU an out-of-range id is an opaque
            # device-side assert.
            raise ValueError(
                f"text tokens: ids must lie in [0, {self.vocab_size}) (the encoder's "
                f"vocabulary), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        present = batch.present["text"][:, None]
        mask = token_mask & present  # an absent text has no tokens to attend
        # Every row keeps one attended position so that attention stays finite; its output is
        # masked out below.
        attend = mask.clone()
        attend[:, 0] = True
        flip = deterministic and self.encoder.training
        if flip:
            self.encoder.eval()
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
                out = self.encoder(input_ids=tokens, attention_mask=attend.long())
        finally:
            if flip:
                self.encoder.train()
        x = out.last_hidden_state * mask[..., None].to(out.last_hidden_state.dtype)
        return x, mask
