"""The torch ``DataLoader`` path over a memory-mapped split.

Each item of `BatchDataset` is a whole `Batch` (a ``BatchSampler`` hands it the row indices),
so padding happens once per batch and worker processes, when asked for, prefetch whole
batches. The training loop's default reads `ParquetSplit.batch` directly: on one node it is as
fast and starts no processes (``benchmarks/reader_paths.py`` measures the paths side by side).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from robustmsa.data.batch import Batch
from robustmsa.data.parquet import ParquetSplit


class BatchDataset(Dataset):
    """``dataset[rows] -> Batch`` for a list of row indices of ``split``."""

    def __init__(self, split: ParquetSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, rows: list[int]) -> Batch:
        return self.split.batch(np.asarray(rows, dtype=np.int64))


def _identity(batch: Batch) -> Batch:
    return batch


def batch_loader(
    split: ParquetSplit,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A ``DataLoader`` of `Batch`es of ``split``; shuffled with a seeded generator if asked."""
    dataset = BatchDataset(split)
    order = (
        RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        if shuffle
        else SequentialSampler(dataset)
    )
    return DataLoader(
        dataset,
        sampler=BatchSampler(order, batch_size=batch_size, drop_last=False),
        batch_size=None,
        collate_fn=_identity,
        num_workers=num_workers,
    )
