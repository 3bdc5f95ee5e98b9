"""MulT: the cross-modal transformer baseline.

Paper: Tsai, Bai, Liang, Kolter, Morency, Salakhutdinov, "Multimodal Transformer for Unaligned
Multimodal Language Sequences", ACL 2019 (arXiv 1906.00295).

Follows the paper:

- each modality's frames go through a 1-D temporal convolution to a common width ``D``, are
  scaled by ``sqrt(D)`` and get sinusoidal position embeddings;
- directional pairwise crossmodal transformers ``CM_{src -> tgt}``: the target modality's
  sequence is the query, the source's the key and value, with a layer norm on both; each
  layer is ``x + attn(LN(x), LN(src))`` followed by ``x + FFN(LN(x))`` (ReLU FFN of width
  ``4D``), a stack ends with a layer norm; six of them for text, audio and vision;
- per target, the two crossmodal outputs are concatenated on the feature axis (``2D``) and a
  self-attention transformer runs over that sequence (the paper's "memory" transformer);
- the last time step of each target's sequence is taken, the three are concatenated (``6D``)
  and a residual two-layer head predicts the score;
- width ``D = 30`` and ``heads = 5``, the released code's defaults (the paper's CMU-MOSI
  table gives ``d = 40`` and 10 heads, which the search space holds inside; docs/references.md).

This project's reading (the paper does not cover it, or this project chose differently):

- padding: attention uses key-padding masks from the batch (``masks[m] & present[m]``); a
  query whose row has no valid key at all (the source modality absent for that sample) gets an
  attention output of exactly zero, so the residual stream passes through unchanged and
  nothing divides by zero (the softmax of such a row runs over every key and is discarded);
  a zero-length batch dimension ``T = 0`` is padded to one masked frame;
- "last step" is the last VALID frame of the target (``pooling: last``, the default);
  ``pooling: mean`` takes the masked mean instead; an absent target pools to zeros, so a
  sample with nothing present gets one constant prediction;
- frames are zeroed where the mask is False before the convolution, so the content of padded,
  dropped or absent frames cannot leak through the kernel;
- one ``dropout`` (embedding, residual, FFN and head) plus ``attn_dropout``; the kernel size
  (default 3, odd so the length is kept) and the depths ``layers`` (crossmodal) and
  ``self_layers`` (default 2 each; the paper reports 4 crossmodal blocks on CMU-MOSI, the
  released code uses 5 for both) are this project's defaults, chosen for CPU-scale studies;
  the search space covers 1 to 6 for both;
- text enters through `TextInput` (precomputed features or token ids through a BERT encoder).

The blocks (`MaskedAttention`, `TransformerLayer`, `TransformerStack`, `TemporalProjection`,
`MulTBackbone`) are reused by ProMMA (`robustmsa.models.promma`).

Shapes: ``B`` samples, ``T_m`` frames of modality ``m`` (tokens ``L`` for transformer text),
``D = dim``; modalities in `MODALITIES` order (text, audio, vision).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.models.base import ModelOutput, ModelSpec, MSAModel, register
from robustmsa.models.layers import masked_mean
from robustmsa.models.text_input import TextInput, TextInputConfig

# A hook run after each layer of a stack: (layer index, x (B, T, D)) -> x.
Inject = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class MulTConfig:
    dim: int = 30
    heads: int = 5
    layers: int = 2  # per crossmodal transformer
    self_layers: int = 2  # per target's self-attention transformer
    kernel_size: int = 3
    dropout: float = 0.1
    attn_dropout: float = 0.1
    pooling: Literal["last", "mean"] = "last"
    text: TextInputConfig = field(default_factory=TextInputConfig)

    def __post_init__(self) -> None:
        for name in ("dim", "heads", "layers", "self_layers", "kernel_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value}")
        if self.dim % self.heads:
            raise ValueError(f"dim: {self.dim} is not divisible by heads={self.heads}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: must be odd (keeps the length), got {self.kernel_size}")
        for name in ("dropout", "attn_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:  # also rejects NaN
                raise ValueError(f"{name}: must be in [0, 1), got {value}")
        if self.pooling not in ("last", "mean"):
            raise ValueError(f"pooling: expected 'last' or 'mean', got {self.pooling!r}")


# --- blocks ---------------------------------------------------------------------------------


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal position embeddings (Vaswani et al.) ``(length, dim)`` float32."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    half = (dim + 1) // 2
    freq = torch.exp(
        torch.arange(half, device=device, dtype=torch.float32) * (-math.log(10000.0) / half)
    )
    angles = pos * freq  # (length, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)[:, :dim]


def last_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last frame of ``x`` (B, T, D) where ``mask`` (B, T) is True -> (B, D); zeros for a
    row without a valid frame."""
    t = x.shape[1]
    rank = mask.long() * torch.arange(1, t + 1, device=x.device)  # 0 where invalid
    index = rank.argmax(dim=1)  # (B,)
    picked = x[torch.arange(x.shape[0], device=x.device), index]  # (B, D)
    return picked * mask.any(dim=1, keepdim=True).to(picked.dtype)


def pool(x: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``last_valid`` or `masked_mean` of ``x`` (B, T, D) over ``mask`` (B, T) -> (B, D)."""
    return last_valid(x, mask) if how == "last" else masked_mean(x, mask)


class MaskedAttention(nn.Module):
    """Multi-head attention with a key-padding mask that stays finite on rows without keys.

    ``query`` (B, Tq, D), ``key`` (B, Tk, D), ``key_mask`` (B, Tk) bool -> (B, Tq, D). A
    sample whose ``key_mask`` row is all False attends over every key (so the softmax has
    something to normalise) and its output is multiplied by 0: exactly zero, finite gradient.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)  # keys and values in one matmul
        self.out = nn.Linear(dim, dim)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        key_mask: torch.Tensor,
        *,
        deterministic: bool = False,
    ) -> torch.Tensor:
        b, tq, d = query.shape
        tk, h = key.shape[1], self.heads
        q = self.q(query).view(b, tq, h, d // h).transpose(1, 2)  # (B, h, Tq, d/h)
        k, v = self.kv(key).view(b, tk, 2, h, d // h).permute(2, 0, 3, 1, 4)  # (B, h, Tk, d/h)
        has_key = key_mask.any(dim=1)  # (B,)
        allowed = key_mask | ~has_key[:, None]  # (B, Tk)
        p = self.dropout if self.training and not deterministic else 0.0
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed[:, None, None, :], dropout_p=p
        )
        out = self.out(out.transpose(1, 2).reshape(b, tq, d))
        return out * has_key[:, None, None].to(out.dtype)


class TransformerLayer(nn.Module):
    """Pre-LN layer: ``x + drop(attn(LN(x), LN_src(src)))``, then ``x + drop(FFN(LN(x)))``.

    Self-attention when ``source`` is None (keys are ``LN(x)`` under ``x_mask``), crossmodal
    attention otherwise (``cross=True`` builds the source's own layer norm).
    ``x`` (B, T, D), ``x_mask`` (B, T), ``source`` (B, S, D), ``source_mask`` (B, S) -> (B, T, D).
    """

    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float, cross: bool):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim) if cross else None
        self.attn = MaskedAttention(dim, heads, attn_dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 4 * dim)
        self.ff2 = nn.Linear(4 * dim, dim)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        source: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
        *,
        deterministic: bool = False,
    ) -> torch.Tensor:
        train = self.training and not deterministic
        q = self.norm_q(x)
        if source is None:
            kv, kv_mask = q, x_mask
        else:
            kv, kv_mask = self.norm_kv(source), source_mask
        x = x + F.dropout(
            self.attn(q, kv, kv_mask, deterministic=deterministic), self.dropout, train
        )
        hidden = F.dropout(F.relu(self.ff1(self.norm_ff(x))), self.dropout, train)
        return x + F.dropout(self.ff2(hidden), self.dropout, train)


class TransformerStack(nn.Module):
    """``layers`` `TransformerLayer`s and a final layer norm: (B, T, D) -> (B, T, D).

    ``inject(i, x)``, when given, runs after layer ``i`` (ProMMA's multi-level prompt
    connections); the final norm comes after the last injection.
    """

    def __init__(
        self, dim: int, heads: int, layers: int, dropout: float, attn_dropout: float, cross: bool
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(dim, heads, dropout, attn_dropout, cross) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        source: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
        *,
        deterministic: bool = False,
        inject: Inject | None = None,
    ) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, x_mask, source, source_mask, deterministic=deterministic)
            if inject is not None:
                x = inject(i, x)
        return self.norm(x)


class TemporalProjection(nn.Module):
    """Frames (B, T, d_in) and mask (B, T) -> (B, T, D): masked frames zeroed, Conv1d
    (no bias, ``same`` padding), times ``sqrt(D)``, plus sinusoidal positions, dropout."""

    def __init__(self, d_in: int, dim: int, kernel_size: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(d_in, dim, kernel_size, padding=kernel_size // 2, bias=False)
        self.scale = math.sqrt(dim)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, *, deterministic: bool = False
    ) -> torch.Tensor:
        x = x * mask.unsqueeze(-1).to(x.dtype)
        h = self.conv(x.transpose(1, 2)).transpose(1, 2) * self.scale  # (B, T, D)
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device)
        return F.dropout(h, self.dropout, self.training and not deterministic)


class FusionHead(nn.Module):
    """MulT's residual head: ``out(h + proj2(drop(relu(proj1(h)))))``, (B, F) -> (B,) float32."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.proj1 = nn.Linear(d, d)
        self.proj2 = nn.Linear(d, d)
        self.out = nn.Linear(d, 1)
        self.dropout = dropout

    def forward(self, h: torch.Tensor, *, deterministic: bool = False) -> torch.Tensor:
        hidden = F.dropout(F.relu(self.proj1(h)), self.dropout, self.training and not deterministic)
        return self.out(h + self.proj2(hidden)).squeeze(-1).float()


def source_modalities(target: str) -> tuple[str, str]:
    """The two other modalities, in `MODALITIES` order."""
    return tuple(m for m in MODALITIES if m != target)  # type: ignore[return-value]


class MulTBackbone(nn.Module):
    """The MulT network, in steps a variant model (ProMMA) can interleave with its own.

    - `encode` (batch) -> sequences ``{m: (B, T_m, D)}`` and valid masks ``{m: (B, T_m)}``
      (``masks[m] & present[m]``);
    - `crossmodal` -> per target ``(B, T_tgt, 2D)``: the two sources' crossmodal outputs
      concatenated on the feature axis (sources in `MODALITIES` order), plus each of them;
    - `fuse` (one target) -> pooled ``(B, 2D)``, optionally with prefix tokens and an
      after-layer hook;
    - `head` -> ``(B,)``. ``forward(batch)`` chains them: plain MulT.
    """

    def __init__(self, config: MulTConfig, dims: dict[str, int]):
        super().__init__()
        self.config = config
        d, c = config.dim, config
        self.text_input = TextInput(config.text, dims["text"])
        in_dims = {
            "text": self.text_input.out_dim,
            "audio": dims["audio"],
            "vision": dims["vision"],
        }
        self.projections = nn.ModuleDict(
            {m: TemporalProjection(in_dims[m], d, c.kernel_size, c.dropout) for m in MODALITIES}
        )
        self.crossmodal_stacks = nn.ModuleDict(
            {
                f"{src}_to_{tgt}": TransformerStack(
                    d, c.heads, c.layers, c.dropout, c.attn_dropout, cross=True
                )
                for tgt in MODALITIES
                for src in source_modalities(tgt)
            }
        )
        self.self_stacks = nn.ModuleDict(
            {
                tgt: TransformerStack(
                    2 * d, c.heads, c.self_layers, c.dropout, c.attn_dropout, cross=False
                )
                for tgt in MODALITIES
            }
        )
        self.head = FusionHead(len(MODALITIES) * 2 * d, c.dropout)

    def encode(
        self, batch: Batch, *, deterministic: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        seqs, masks = {}, {}
        for m in MODALITIES:
            if m == "text":
                x, mask = self.text_input(batch)
            else:
                x, mask = batch.features[m], batch.masks[m]
            # present is authoritative: a frame mask left True on an absent modality is ignored.
            mask = mask & batch.present[m].unsqueeze(1)
            if x.shape[1] == 0:  # no frame in the whole batch: one masked frame keeps shapes sane
                x = x.new_zeros(x.shape[0], 1, x.shape[2])
                mask = mask.new_zeros(mask.shape[0], 1)
            seqs[m] = self.projections[m](x, mask, deterministic=deterministic)
            masks[m] = mask
        return seqs, masks

    def crossmodal(
        self,
        seqs: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        *,
        deterministic: bool = False,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{tgt: (Z_{src1 -> tgt}, Z_{src2 -> tgt})}``, each (B, T_tgt, D)."""
        out = {}
        for tgt in MODALITIES:
            out[tgt] = tuple(
                self.crossmodal_stacks[f"{src}_to_{tgt}"](
                    seqs[tgt], masks[tgt], seqs[src], masks[src], deterministic=deterministic
                )
                for src in source_modalities(tgt)
            )
        return out

    def fuse(
        self,
        target: str,
        crossed: torch.Tensor,
        mask: torch.Tensor,
        *,
        prefix: torch.Tensor | None = None,
        inject: Inject | None = None,
        deterministic: bool = False,
    ) -> torch.Tensor:
        """Self-attention over ``[prefix; crossed]`` (prefix tokens always valid) -> pooled
        (B, 2D). ``crossed`` (B, T, 2D), ``mask`` (B, T), ``prefix`` (B, P, 2D)."""
        if prefix is not None:
            crossed = torch.cat([prefix.to(crossed.dtype), crossed], dim=1)
            mask = torch.cat([mask.new_ones(prefix.shape[:2]), mask], dim=1)
        h = self.self_stacks[target](crossed, mask, deterministic=deterministic, inject=inject)
        return pool(h, mask, self.config.pooling)

    def forward(
        self, batch: Batch, *, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Plain MulT: prediction (B,) float32 and the pooled targets (B, 3, 2D)."""
        seqs, masks = self.encode(batch, deterministic=deterministic)
        crossed = self.crossmodal(seqs, masks, deterministic=deterministic)
        pooled = torch.stack(
            [
                self.fuse(t, torch.cat(crossed[t], dim=-1), masks[t], deterministic=deterministic)
                for t in MODALITIES
            ],
            dim=1,
        )
        return self.head(pooled.flatten(1), deterministic=deterministic), pooled


# --- the model ------------------------------------------------------------------------------


class MulT(MSAModel):
    """The MulT baseline; see the module docstring.

    No auxiliary losses. extras (detached): ``representation_norm`` (B, 3), the L2 norm of
    each target's pooled representation in `MODALITIES` order (0 for an absent target).
    """

    def __init__(self, config: MulTConfig, dims: dict[str, int]):
        super().__init__()
        self.config = config
        self.backbone = MulTBackbone(config, dims)

    def forward_standardised(self, batch: Batch) -> ModelOutput:
        prediction, pooled = self.backbone(batch)
        return ModelOutput(
            prediction=prediction,
            extras={"representation_norm": pooled.detach().float().norm(dim=-1)},
        )


def _build(config: object, dims: dict[str, int]) -> MulT:
    if not isinstance(config, MulTConfig):
        raise TypeError(f"expected MulTConfig, got {type(config).__name__}")
    return MulT(config, dims)


# dim and heads are searched as categories whose every pair divides (20k and 1, 5, 10, 20).
SEARCH_SPACE: tuple[dict, ...] = (
    # The paper's CMU-MOSI setting (its Table 5: d = 40, 10 heads, 4 crossmodal blocks, lr 1e-3,
    # dropouts 0.2 / 0.2 / 0.1) and the released code's (5 heads, 5 levels, lr 1e-3) lie
    # strictly inside (docs/references.md). The code's width 30 is not a choice (no head count
    # above 10 divides both 30 and 40); it lies between the choices 20 and 40.
    {"name": "model.params.dim", "type": "categorical", "choices": [20, 40, 60, 80]},
    {"name": "model.params.heads", "type": "categorical", "choices": [1, 5, 10, 20]},
    {"name": "model.params.layers", "type": "int", "low": 1, "high": 6},
    # Self-attention depth: not reported by the paper; the code uses max(levels, 3) = 5.
    {"name": "model.params.self_layers", "type": "int", "low": 1, "high": 6},
    # One dropout for embedding, residual, FFN and head: the paper's 0.2 (embedding) and 0.1
    # (output) inside; attn_dropout (its 0.2) is not searched.
    {"name": "model.params.dropout", "type": "float", "low": 0.0, "high": 0.3},
    {"name": "training.lr", "type": "float", "low": 3.0e-4, "high": 3.0e-3, "log": True},
)

register(ModelSpec(name="mult", config_cls=MulTConfig, build=_build, search_space=SEARCH_SPACE))
