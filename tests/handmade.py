"""A hand-written dataset small enough that tests compute every expected value in numpy."""

from __future__ import annotations

import numpy as np
from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import SplitArrays
from robustmsa.data.schema import DatasetMeta

DIMS = {"text": 3, "audio": 2, "vision": 4}
# Frames per sample and split; 0 means the modality is naturally absent for that sample.
LENGTHS = {
    "train": {"text": [2, 5, 1, 3], "audio": [4, 0, 2, 1], "vision": [3, 3, 6, 2]},
    "valid": {"text": [4, 1, 2], "audio": [0, 3, 0], "vision": [2, 5, 1]},
    "test": {"text": [1, 2], "audio": [0, 0], "vision": [2, 1]},
}


def make_splits(seed: int = 0) -> dict[str, SplitArrays]:
    rng = np.random.default_rng(seed)
    splits = {}
    for name, lens in LENGTHS.items():
        n = len(lens["text"])
        frames = {}
        for m in MODALITIES:
            # Non-zero means and non-unit scales so that standardisation is visible.
            frames[m] = [
                (3.0 + 2.0 * rng.standard_normal((t, DIMS[m]))).astype(np.float32) for t in lens[m]
            ]
        # A feature that is constant over the train frames: its std must fall back to 1.
        for x in frames["vision"]:
            x[:, 0] = 7.5
        splits[name] = SplitArrays(
            ids=[f"{name}-{i}" for i in range(n)],
            labels=rng.uniform(-3, 3, n).astype(np.float32),
            frames=frames,
            present={m: np.array([t > 0 for t in lens[m]]) for m in MODALITIES},
        )
    return splits


def make_meta() -> DatasetMeta:
    return DatasetMeta(name="hand", dims=dict(DIMS), label_range=(-3.0, 3.0), source="test")
