"""Fixtures for the spectrum tests: a tiny synthetic dataset and standard-normal batches."""

from __future__ import annotations

import pytest
import torch
from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.data.parquet import open_dataset
from robustmsa.data.synthetic import generate


@pytest.fixture(scope="session")
def tiny_valid(tmp_path_factory):
    """The ``valid`` split of the tiny synthetic dataset (48 samples, variable lengths)."""
    root = generate("tiny", tmp_path_factory.mktemp("spectrum") / "tiny")
    return open_dataset(root)["valid"]


@pytest.fixture
def make_batch():
    """``make_batch(b, t, d, seed, lengths=None)``: standard-normal features on every modality.

    ``lengths`` (B,) gives each sample's valid prefix (default: all ``t`` frames).
    """

    def make(b=64, t=50, d=16, seed=0, lengths=None):
        g = torch.Generator().manual_seed(seed)
        lengths = torch.full((b,), t) if lengths is None else torch.as_tensor(lengths)
        mask = torch.arange(t)[None, :] < lengths[:, None]
        features, masks, present = {}, {}, {}
        for m in MODALITIES:
            x = torch.randn((b, t, d), generator=g)
            features[m] = torch.where(mask[..., None], x, torch.zeros(()))
            masks[m] = mask.clone()
            present[m] = lengths > 0
        return Batch(
            features=features,
            masks=masks,
            present=present,
            labels=torch.zeros(b),
            ids=[f"s{i:05d}" for i in range(b)],
        )

    return make
