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


def test_ray_data_batches_carry_the_same_tokens(tmp_path, local_ray):
    import numpy as np
    from handmade import make_meta, make_splits
    from robustmsa.data.parquet import open_dataset, write_dataset

    splits = make_splits()
    rng = np.random.default_rng(0)
    for s in splits.values():
        s.text_ids = [
            np.array([101, *rng.integers(1000, 2000, size=k), 102]) for k in range(len(s.ids))
        ]
    split = open_dataset(write_dataset(tmp_path / "tok", splits, make_meta()))["train"]
    got = list(ray_batches(split, batch_size=3))
    want = list(split.batches(3))
    assert len(got) == len(want) == 2
    for a, b in zip(got, want, strict=True):
        assert b.tokens is not None
        assert torch.equal(a.tokens, b.tokens)
        assert torch.equal(a.token_mask, b.token_mask)
