"""A worker of tests/data/test_frame_cache.py's concurrency test, importable by the spawned
processes (they import the function by its module name, which a test module's is not)."""

from __future__ import annotations

import numpy as np
from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import ParquetSplit


def open_and_sum(args) -> list[float]:
    """Open the split ``args = (path, cache_root)`` and sum each modality's cached frames."""
    path, root = args
    split = ParquetSplit(path, root)
    return [float(np.asarray(split.frames[m].array, np.float64).sum()) for m in MODALITIES]
