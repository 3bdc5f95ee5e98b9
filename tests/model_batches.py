"""Batches, dims and small configs shared by the model tests (``tests/models``).

The batches are the tiny synthetic preset's (fixture ``batch`` in ``tests/models/conftest.py``);
these helpers derive variants from them. Shapes: ``B`` samples, ``T_m`` frames and ``d_m``
features of modality ``m`` (`DIMS`), ``L`` tokens; modalities in `MODALITIES` order.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import torch
from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.models import MODELS, ModelOutput, MSAModel
from robustmsa.training.loop import task_loss

# Feature dims ``d_m`` of the tiny synthetic preset.
DIMS = {"text": 16, "audio": 5, "vision": 7}
# Every subset of absent modalities, from none to all three (test ids: `absent_id`).
ABSENT_SUBSETS = [
    frozenset(c) for n in range(len(MODALITIES) + 1) for c in itertools.combinations(MODALITIES, n)
]
# A small, dropout-free MulT (and ProMMA) configuration for the tests that train or compare
# many forwards.
SMALL_MULT = {
    "dim": 16,
    "heads": 2,
    "layers": 1,
    "self_layers": 1,
    "dropout": 0.0,
    "attn_dropout": 0.0,
}
# A small BERT built offline from its config (no download): the `text: {kind: transformer}` path.
SMALL_BERT = {"kind": "transformer", "hidden": 16, "layers": 1, "heads": 2, "max_tokens": 32}


def absent_id(absent) -> str:
    """The test id of a set of absent modalities: ``"audio-text"``, or ``"none"``."""
    return "-".join(sorted(absent)) or "none"


def build_model(name: str, seed: int = 0, **overrides) -> MSAModel:
    """The registered model ``name`` with ``overrides`` of its config fields, for `DIMS`; its
    weights drawn after ``torch.manual_seed(seed)``."""
    spec = MODELS[name]
    torch.manual_seed(seed)
    return spec.build(spec.config_cls(**overrides), DIMS)


def drop(batch: Batch, absent) -> Batch:
    """``batch`` with the modalities in ``absent`` made absent in every sample as the data layer
    does it: features (B, T_m, d_m) zero, masks (B, T_m) and presence (B,) False; ``clean``
    untouched."""
    features, masks, present = dict(batch.features), dict(batch.masks), dict(batch.present)
    for m in absent:
        features[m] = torch.zeros_like(features[m])
        masks[m] = torch.zeros_like(masks[m])
        present[m] = torch.zeros_like(present[m])
    return replace(batch, features=features, masks=masks, present=present)


def keep_only(batch: Batch, keep: torch.Tensor) -> Batch:
    """``batch`` with modality ``m`` made absent for the samples where ``keep[:, i]`` (B, 3) bool
    is False (``i`` its index in `MODALITIES`); ``clean`` untouched."""
    return replace(
        batch,
        features={m: batch.features[m] * keep[:, i, None, None] for i, m in enumerate(MODALITIES)},
        masks={m: batch.masks[m] & keep[:, i, None] for i, m in enumerate(MODALITIES)},
        present={m: batch.present[m] & keep[:, i] for i, m in enumerate(MODALITIES)},
    )


def corrupt(batch: Batch, seed: int = 1, *, unk_rate: float = 1 / 3) -> Batch:
    """Standard-normal noise added to the features (B, T_m, d_m) on valid frames and, when the
    batch has tokens (B, L), about ``unk_rate`` of the word tokens (not [CLS]/[SEP]/padding)
    turned into ``[UNK]`` (id 100); the uncorrupted batch as ``clean``."""
    gen = torch.Generator().manual_seed(seed)
    features = {
        m: x + torch.randn(x.shape, generator=gen) * batch.masks[m].unsqueeze(-1)
        for m, x in batch.features.items()
    }
    tokens = batch.tokens
    if tokens is not None and unk_rate > 0:
        words = batch.token_mask & (tokens != 101) & (tokens != 102)
        unk = words & (torch.rand(tokens.shape, generator=gen) < unk_rate)
        tokens = tokens.masked_fill(unk, 100)
    return replace(batch, features=features, tokens=tokens, clean=batch)


def with_tokens(batch: Batch, length: int = 12, seed: int = 0) -> Batch:
    """``batch`` with BERT-style token ids: ``tokens`` (B, L = length) int64, ``[CLS] w ... w
    [SEP]`` (101, words, 102) over 4 to ``length`` positions, then padding (id 0), and
    ``token_mask`` (B, L) bool, True at the real tokens."""
    g = torch.Generator().manual_seed(seed)
    b = batch.size
    lengths = torch.randint(4, length + 1, (b,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    words = torch.randint(1000, 30000, (b, length), generator=g)
    tokens = torch.where(mask, words, torch.zeros((), dtype=torch.long))
    tokens[:, 0] = 101
    tokens[torch.arange(b), lengths - 1] = 102
    return replace(batch, tokens=tokens, token_mask=mask)


def training_loss(model: MSAModel, out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
    """The training loop's objective, a scalar: its task loss (`task_loss`, the L1 between
    ``out.prediction`` and ``labels``, both (B,)) plus the auxiliary losses weighted by
    ``model.aux_loss_weights()``."""
    weights = model.aux_loss_weights()
    return task_loss(out, labels, model) + sum(weights[k] * v for k, v in out.aux_losses.items())


def assert_finite(out: ModelOutput, loss_dtype: torch.dtype | None = None) -> None:
    """The prediction (B,), the extras and the auxiliary losses are finite; the losses are
    scalars (of ``loss_dtype`` when given)."""
    assert torch.isfinite(out.prediction).all()
    for name, value in {**out.aux_losses, **out.extras}.items():
        assert torch.isfinite(value).all(), name
    for value in out.aux_losses.values():
        assert value.dim() == 0
        if loss_dtype is not None:
            assert value.dtype == loss_dtype
