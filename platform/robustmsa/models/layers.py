"""Blocks shared by two models or more. Nothing model-specific lives here.

Shapes: ``B`` samples, ``T`` frames, ``d_in`` input features per frame, ``D`` model width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, T, D) over the frames where ``mask`` (B, T) is True -> (B, D).

    A sample with no valid frame gets exactly zeros: the count is clamped to 1 before the
    division, so neither the value nor its gradient can be NaN (``0 / 0`` would poison the
    whole batch's backward pass, even for rows a model later discards with ``torch.where``).
    """
    weights = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    total = (x * weights).sum(dim=1)  # (B, D)
    count = weights.sum(dim=1).clamp_min(1.0)  # (B, 1)
    return total / count


class ModalityEncoder(nn.Module):
    """One modality's frames -> one vector per sample.

    ``x`` (B, T, d_in) float, ``mask`` (B, T) bool -> (B, d_model).

    Per frame: Linear -> GELU -> LayerNorm -> dropout; then the mean over valid frames. The
    LayerNorm puts every modality on the same scale before fusion, whatever its raw feature
    scale. Padded frames never contribute, and a sample without a valid frame (an absent
    modality) encodes to zeros. This is the thin skeleton encoder; a temporal model
    (convolution, attention) can replace it behind the same signature.
    """

    def __init__(self, d_in: int, d_model: int, dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(d_in, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, *, deterministic: bool = False
    ) -> torch.Tensor:
        """Encode; ``deterministic=True`` skips dropout even in training mode.

        Used for targets that must not carry dropout noise (QA-MoE's clean encoding) without
        flipping the module's train/eval state in the middle of a forward pass.
        """
        frames = self.norm(F.gelu(self.proj(x)))  # (B, T, D)
        frames = F.dropout(frames, self.dropout, training=self.training and not deterministic)
        return masked_mean(frames, mask)


class MLP(nn.Module):
    """Two-layer perceptron: (..., d_in) -> Linear -> GELU -> dropout -> Linear -> (..., d_out)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, d_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(d_hidden, d_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def soft_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``bound * tanh(x / bound)``: ~identity near 0, saturating smoothly in (-bound, bound).

    For log-variances: keeps ``exp(-log_var)`` bounded without the dead gradient of a hard
    clamp, so a head that overshoots can still come back.
    """
    return bound * torch.tanh(x / bound)
