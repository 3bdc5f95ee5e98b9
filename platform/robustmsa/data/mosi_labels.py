"""The real CMU-MOSI train labels, packaged: the `mosi` synthetic preset's label distribution.

The synthetic ``mosi`` preset maps a standard normal score through the empirical quantile
function of these labels (`robustmsa.data.synthetic`). They ship inside the package so that
every checkout, clone, CI runner and cluster node generates the same dataset (same digest),
with no file outside the package consulted.

Source: CMU-MOSI (A. Zadeh, R. Zellers, E. Pincus, L.-P. Morency, "MOSI: Multimodal Corpus of
Sentiment Intensity and Subjectivity Analysis in Online Opinion Videos", arXiv:1606.06259,
2016): per-segment sentiment intensity in [-3, 3], the average of its annotators' ratings. The
split is the standard CMU-MOSI train/valid/test split (1284 / 229 / 686 segments), as released
with the Memory Fusion Network (A. Zadeh et al., AAAI 2018; repository pliang279/MFN, MIT
licence, Copyright (c) 2019 Paul Liang): the train labels are its ``y_train.h5``, one float64
dataset ``data`` of shape (1284,).

Derivation: ``values, counts = numpy.unique(read_label_file("y_train.h5"), return_counts=True)``
(`read_label_file` below), each value written with ``repr``, which round-trips a float64
exactly. The values are kept as stored in that file, including its 12-significant-digit
thirds (``-0.666666666667``). Expanding each value ``count`` times (`train_labels`) gives the
1284 sorted train labels bit for bit, hence exactly the empirical quantile function; 53 of them
are exactly 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustmsa.errors import DataError

SOURCE = (
    "CMU-MOSI train labels (Zadeh et al. 2016, arXiv:1606.06259), standard split as released "
    "with the Memory Fusion Network (pliang279/MFN, y_train.h5)"
)
N = 1284

# (distinct label value, number of train labels with that value), ascending.
VALUE_COUNTS: tuple[tuple[float, int], ...] = (
    (-3.0, 3),
    (-2.8, 9),
    (-2.6, 12),
    (-2.5, 1),
    (-2.4, 12),
    (-2.25, 1),
    (-2.2, 29),
    (-2.0, 53),
    (-1.8, 39),
    (-1.75, 3),
    (-1.6, 56),
    (-1.5, 5),
    (-1.4, 38),
    (-1.25, 6),
    (-1.2, 36),
    (-1.0, 62),
    (-0.8, 48),
    (-0.75, 6),
    (-0.666666666667, 2),
    (-0.6, 29),
    (-0.5, 14),
    (-0.4, 44),
    (-0.333333333333, 2),
    (-0.25, 5),
    (-0.2, 37),
    (0.0, 53),
    (0.2, 38),
    (0.25, 8),
    (0.333333333333, 1),
    (0.4, 37),
    (0.5, 9),
    (0.6, 40),
    (0.666666666667, 1),
    (0.75, 2),
    (0.8, 40),
    (1.0, 38),
    (1.2, 41),
    (1.25, 1),
    (1.33333333333, 1),
    (1.4, 63),
    (1.5, 2),
    (1.6, 62),
    (1.75, 3),
    (1.8, 66),
    (2.0, 77),
    (2.2, 67),
    (2.4, 36),
    (2.6, 26),
    (2.8, 16),
    (3.0, 4),
)
VALUES: tuple[float, ...] = tuple(v for v, _ in VALUE_COUNTS)
COUNTS: tuple[int, ...] = tuple(c for _, c in VALUE_COUNTS)


def train_labels() -> np.ndarray:
    """The 1284 CMU-MOSI train labels, sorted ascending, float64 (a fresh array each call)."""
    return np.repeat(np.array(VALUES, dtype=np.float64), COUNTS)


def read_label_file(path: str | Path) -> np.ndarray:
    """The labels in an MFN-style ``y_*.h5`` (dataset ``data``, else ``d1``), float64, in file
    order. Only to derive or check the packaged values; nothing reads such a file by default."""
    import h5py  # imported lazily: only this check needs it

    with h5py.File(path, "r") as f:
        key = "data" if "data" in f else "d1"
        y = np.asarray(f[key][()], dtype=np.float64).reshape(-1)
    if y.size == 0 or not np.all(np.isfinite(y)):
        raise DataError(f"{path}: expected finite labels in dataset 'data'")
    return y
