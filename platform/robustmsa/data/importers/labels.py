"""Label ranges shared by the importers."""

from __future__ import annotations

import math

import numpy as np


def label_range_of(
    labels: dict[str, np.ndarray], given: tuple[float, float] | None
) -> tuple[float, float]:
    """``given``, else the integer-bounded range ``(floor(min), ceil(max))`` of every split's
    labels (widened to one unit when all labels are equal)."""
    if given is not None:
        return float(given[0]), float(given[1])
    lo = math.floor(min(float(y.min()) for y in labels.values()))
    hi = math.ceil(max(float(y.max()) for y in labels.values()))
    return float(lo), float(hi if hi > lo else lo + 1)


def first_outside(y: np.ndarray, lo: float, hi: float) -> int | None:
    """The first row whose *stored* (float32) label lies outside ``[lo, hi]``, or None."""
    y32 = np.asarray(y).astype(np.float32)
    bad = (y32 < lo) | (y32 > hi)
    return int(np.argmax(bad)) if bad.any() else None
