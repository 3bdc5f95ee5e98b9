"""Counter-based random streams keyed by what a corrupted input is a function of.

A stream for one sample and modality depends only on ``(digest, sample_id, stream_key, seed,
modality, stream)``, never on batch size, order, worker or device, so every model in a study
sees identical corrupted inputs (docs/architecture.md §3, determinism).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

# Independent sub-streams per sample and modality: the drop pattern at a point does not depend
# on whether (or how much) noise was drawn before it.
NOISE_STREAM = "noise"
MISSING_STREAM = "missing"
# Token-id operators on text (`operators.corrupt_tokens`): whether a token is replaced, by
# which vocabulary token, and whether it becomes [UNK]. Their own streams, so adding token ids
# to a dataset leaves the draws of its text features unchanged.
TOKEN_NOISE_STREAM = "token-noise"
TOKEN_REPLACE_STREAM = "token-replace"
TOKEN_MISSING_STREAM = "token-missing"


def derive_key(
    digest: str, sample_id: str, stream_key: str, seed: int, modality: str, stream: str
) -> int:
    """A 64-bit unsigned key: BLAKE2b of the unambiguous JSON encoding of the arguments."""
    payload = json.dumps([digest, sample_id, stream_key, int(seed), modality, stream])
    return int.from_bytes(hashlib.blake2b(payload.encode(), digest_size=8).digest(), "little")


def stream(
    digest: str, sample_id: str, stream_key: str, seed: int, modality: str, name: str
) -> np.random.Generator:
    """A NumPy Philox generator for one ``(sample, modality, stream)``; CPU, device-independent."""
    return np.random.Generator(
        np.random.Philox(key=derive_key(digest, sample_id, stream_key, seed, modality, name))
    )
