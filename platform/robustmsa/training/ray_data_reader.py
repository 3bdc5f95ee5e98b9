"""The Ray Data path: a split read with ``ray.data.read_parquet``, handed out as `Batch`es.

For datasets that live on shared storage and are streamed to many workers. Batches are
standardised and padded exactly as `ParquetSplit.batch` does (same `FrameStore` gather), so both
paths give identical tensors; ``benchmarks/reader_paths.py`` measures their throughput.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.data.parquet import FrameStore, ParquetSplit, token_store


def _to_batch(table: pa.Table, split: ParquetSplit) -> Batch:
    rows = np.arange(table.num_rows)
    features, masks, present = {}, {}, {}
    for m in MODALITIES:
        column = table.column(m).combine_chunks()
        d = split.meta.dims[m]
        store = FrameStore.standardise(
            column.values.flatten().to_numpy().reshape(-1, d),
            column.offsets.to_numpy(),
            # The stored statistics as they are: `standardise` rounds them as the cache did.
            split.meta.feature_mean[m],
            split.meta.feature_std[m],
        )
        features[m], masks[m] = store.padded(rows)
        present[m] = torch.from_numpy(
            table.column(f"{m}_present").to_numpy(zero_copy_only=False).copy()
        )
    tokens = token_mask = None
    if "text_ids" in table.column_names:
        padded, token_mask = token_store(table.column("text_ids").combine_chunks()).padded(rows)
        tokens = padded.squeeze(-1)
    return Batch(
        features=features,
        masks=masks,
        present=present,
        labels=torch.from_numpy(table.column("label").to_numpy().astype(np.float32)),
        ids=table.column("id").to_pylist(),
        tokens=tokens,
        token_mask=token_mask,
    )


def ray_batches(split: ParquetSplit, batch_size: int) -> Iterator[Batch]:
    """`Batch`es of ``split`` in file order through Ray Data (needs ``ray.init`` first)."""
    import ray.data

    dataset = ray.data.read_parquet(str(split.path))
    for table in dataset.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
        yield _to_batch(table, split)
