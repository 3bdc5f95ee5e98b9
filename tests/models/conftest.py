"""Fixtures of the model tests; the helpers deriving batches are in ``tests/model_batches.py``."""

from __future__ import annotations

import pytest
from robustmsa.data.batch import Batch


@pytest.fixture(scope="module")
def batch(tiny_splits) -> Batch:
    """The first 8 training samples of the tiny preset: features (8, T_m, d_m), no tokens."""
    return tiny_splits["train"].batch(list(range(8)))
