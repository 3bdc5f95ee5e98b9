"""Fixtures of the model tests; the helpers deriving batches are in ``tests/model_batches.py``."""

from __future__ import annotations

import pytest
import torch
from robustmsa.data.batch import Batch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: a second intra-op thread only adds synchronisation, and on a
    busy 2-core machine it made the learning tests 10-20x slower (spin-waiting on a thread
    that shares its core). Restored after each test module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def batch(tiny_splits) -> Batch:
    """The first 8 training samples of the tiny preset: features (8, T_m, d_m), no tokens."""
    return tiny_splits["train"].batch(list(range(8)))
