"""The Ray Data path gives the same batches as the memory-mapped reader."""

from __future__ import annotations

import torch
from robustmsa.data.batch import MODALITIES
from robustmsa.training.ray_data_reader import ray_batches


def test_ray_data_batches_equal_the_reader(tiny_splits, local_ray):
    split = tiny_splits["train"]
    got = list(ray_batches(split, batch_size=64))
    want = list(split.batches(64))
    assert [b.ids for b in got] == [b.ids for b in want]
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a.labels, b.labels)
        for m in MODALITIES:
            assert torch.equal(a.features[m], b.features[m])
            assert torch.equal(a.masks[m], b.masks[m])
            assert torch.equal(a.present[m], b.present[m])
