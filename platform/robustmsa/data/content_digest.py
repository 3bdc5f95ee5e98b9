"""The content digest of one split: what the writer recorded, what the reader checks.

``DatasetMeta.digest`` names a dataset (it is logged with every run that reads it); nothing
used to check that a file still holds what that digest was computed on, so a split edited after
it was written was read, and logged, under its old name. Each split's content digest is
recorded in the metadata (``content_digests``) when the dataset is written and checked when a
reader first builds the split's frame cache, which is when it reads every frame anyway (a
current cache was built from verified content; `robustmsa.data.frame_cache`).

The digest is a sha256 over, in this order: the split's name; its ids; its labels (float32);
per modality its presence flags (bool) and frame counts (int64); its token ids (counts int64,
values int32) and raw texts when it has them; then per modality every frame (float32), row
after row. Datasets written before these digests existed have none: they are read unchecked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from robustmsa.data.batch import MODALITIES


def rows_digest(
    split: str,
    ids: Sequence[str],
    labels: np.ndarray,
    present: dict[str, np.ndarray],
    lengths: dict[str, np.ndarray],
    text_ids: tuple[np.ndarray, np.ndarray] | None = None,
    raw_text: Sequence[str] | None = None,
):
    """A sha256 object fed with everything of the split but its frames (module docstring);
    ``text_ids``: ``(counts, values)`` of the token ids."""
    h = hashlib.sha256()
    h.update(split.encode() + b"\x00")
    h.update("\x00".join(ids).encode())
    h.update(np.ascontiguousarray(labels, dtype=np.float32).tobytes())
    for m in MODALITIES:
        h.update(np.ascontiguousarray(present[m], dtype=bool).tobytes())
        h.update(np.ascontiguousarray(lengths[m], dtype=np.int64).tobytes())
    if text_ids is not None:
        counts, values = text_ids
        h.update(np.ascontiguousarray(counts, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(values, dtype=np.int32).tobytes())
    if raw_text is not None:
        h.update("\x00".join(raw_text).encode())
    return h


def split_digest(split: str, arrays) -> str:
    """The content digest of ``arrays`` (a `robustmsa.data.parquet.SplitArrays`) as the split
    ``split``, as the writer records it."""
    text = None
    if arrays.text_ids is not None:
        counts = np.array([len(t) for t in arrays.text_ids], np.int64)
        values = (
            np.concatenate([np.asarray(t, np.int32) for t in arrays.text_ids])
            if counts.sum()
            else np.zeros(0, np.int32)
        )
        text = (counts, values)
    lengths = {m: np.array([len(x) for x in arrays.frames[m]], np.int64) for m in MODALITIES}
    h = rows_digest(
        split, arrays.ids, arrays.labels, arrays.present, lengths, text, arrays.raw_text
    )
    for m in MODALITIES:
        for x in arrays.frames[m]:
            h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def table_digest(split: str, table) -> str:
    """The content digest of the Arrow ``table`` of split ``split`` (a whole split in memory):
    what a writer records for it, the same value as `split_digest` of the arrays it holds."""
    columns = table.column_names
    present = {
        m: np.asarray(table.column(f"{m}_present").to_numpy(zero_copy_only=False), bool)
        for m in MODALITIES
    }
    lengths = {m: table.column(f"{m}_length").to_numpy() for m in MODALITIES}
    text = None
    if "text_ids" in columns:
        col = table.column("text_ids").combine_chunks()
        start, stop = col.offsets[0].as_py(), col.offsets[len(col)].as_py()
        text = (np.diff(col.offsets.to_numpy()), col.values.to_numpy()[start:stop])
    raw_text = table.column("raw_text").to_pylist() if "raw_text" in columns else None
    ids = table.column("id").to_pylist()
    labels = table.column("label").to_numpy()
    h = rows_digest(split, ids, labels, present, lengths, text, raw_text)
    for m in MODALITIES:
        col = table.column(m).combine_chunks()
        start, stop = col.offsets[0].as_py(), col.offsets[len(col)].as_py()
        d = col.type.value_type.list_size
        h.update(np.ascontiguousarray(col.values.flatten().to_numpy()[start * d : stop * d],
                                      dtype=np.float32).tobytes())  # fmt: skip
    return h.hexdigest()[:16]
