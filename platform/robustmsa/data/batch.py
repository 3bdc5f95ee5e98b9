"""The in-memory batch every model consumes.

Shapes (B samples, T_m frames of modality m, d_m features per frame, L token positions):

- ``features[m]``: float32 ``(B, T_m, d_m)``, zero at padded or dropped frames;
- ``masks[m]``: bool ``(B, T_m)``, True where a frame holds data;
- ``present[m]``: bool ``(B,)``, False when the modality is absent for the sample (natural
  absence, or made absent by the spectrum); an absent modality has an all-False mask;
- ``labels``: float32 ``(B,)``;
- ``ids``: the ``B`` sample ids;
- ``clean``: during training under corruption, the same samples before corruption (used by
  self-supervised objectives that predict the clean encoding from the corrupted one), else None;
- ``reliability``: optional float32 ``(B, 2)`` per modality, the ``(noise λ, missing η)`` that
  was applied (known to the evaluation and the oracle; models must not read it);
- ``tokens``: optional int64 ``(B, L)`` text token ids, padded with the pad id (0), when the
  dataset has a ``text_ids`` column, else None;
- ``token_mask``: optional bool ``(B, L)``, True at real tokens; set exactly when ``tokens`` is.
  Tokens belong to the text modality: ``present["text"]`` governs them too (an absent text
  keeps its token ids and mask; models must check ``present``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")


@dataclass
class Batch:
    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    labels: torch.Tensor
    ids: list[str]
    clean: Batch | None = None
    reliability: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.tokens is None) != (self.token_mask is None):
            raise ValueError(
                "tokens and token_mask must be given together, got tokens "
                f"{'None' if self.tokens is None else 'set'} and token_mask "
                f"{'None' if self.token_mask is None else 'set'}"
            )
        if self.tokens is not None and (
            self.tokens.dim() != 2 or self.tokens.shape != self.token_mask.shape
        ):
            raise ValueError(
                f"tokens {tuple(self.tokens.shape)} and token_mask "
                f"{tuple(self.token_mask.shape)} must both be (B, L)"
            )

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.features)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device``.

        Copies onto an accelerator are non-blocking (later kernels on the device's stream wait
        for them); copies to the CPU block: a non-blocking device-to-host copy returns before
        its bytes arrive, and reading the result without a synchronisation reads stale memory
        (seen on an H200: masks moved back for a comparison differed from the CPU's)."""
        non_blocking = torch.device(device).type != "cpu"

        def move(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(device, non_blocking=non_blocking) for k, v in tensors.items()}

        def move_one(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return replace(
            self,
            features=move(self.features),
            masks=move(self.masks),
            present=move(self.present),
            labels=self.labels.to(device, non_blocking=non_blocking),
            clean=None if self.clean is None else self.clean.to(device),
            reliability=move(self.reliability),
            tokens=move_one(self.tokens),
            token_mask=move_one(self.token_mask),
        )

    def subset(self, index: torch.Tensor) -> Batch:
        """Rows ``index`` (a 1-D long tensor) of this batch, in that order."""
        rows = index.tolist()

        def take(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            # index_select copies whole rows; advanced indexing (x[index]) is several times
            # slower on (B, T, d) features.
            return {k: v.index_select(0, index) for k, v in tensors.items()}

        def take_one(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.index_select(0, index)

        return Batch(
            features=take(self.features),
            masks=take(self.masks),
            present=take(self.present),
            labels=self.labels.index_select(0, index),
            ids=[self.ids[i] for i in rows],
            clean=None if self.clean is None else self.clean.subset(index),
            reliability=take(self.reliability),
            tokens=take_one(self.tokens),
            token_mask=take_one(self.token_mask),
        )
