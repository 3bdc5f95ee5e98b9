"""Write a dataset to Parquet and read it back as memory-mapped splits that hand out `Batch`es.

Writes are validated first (`robustmsa.data.validate`) and go to a temporary directory that is
renamed into place, so bad data or a failed write leaves nothing half-written. Reads validate
the per-row columns and memory-map the frames from the frame cache
(`robustmsa.data.frame_cache`, built and validated on first open); a batch copies only its own
frames.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.data.content_digest import rows_digest, split_digest
from robustmsa.data.frame_cache import frame_cache_root, load_frames, standardise
from robustmsa.data.schema import (
    OPTIONAL_COLUMNS,
    SPLITS,
    DatasetMeta,
    arrow_schema,
)
from robustmsa.data.validate import (
    FRAME_COLUMNS,
    parse_meta,
    validate_dataset_splits,
    validate_rows,
    validate_schema,
    validate_splits,
)
from robustmsa.errors import DataError

ROW_GROUP_ROWS = 512


@dataclass
class SplitArrays:
    """One split in memory before writing.

    ``frames[m]`` is a list of ``N`` float32 arrays of shape ``(T_i, d_m)`` (``T_i = 0`` when
    the modality is absent); ``present[m]`` is bool ``(N,)``; ``labels`` float32 ``(N,)``.
    Optional: ``text_ids`` (``N`` int arrays of token ids) and ``raw_text`` (``N`` strings).
    """

    ids: list[str]
    labels: np.ndarray
    frames: dict[str, list[np.ndarray]]
    present: dict[str, np.ndarray]
    text_ids: list[np.ndarray] | None = None
    raw_text: list[str] | None = None

    def optional_columns(self) -> list[str]:
        return [c for c in OPTIONAL_COLUMNS if getattr(self, c) is not None]


def _digest(splits: dict[str, SplitArrays]) -> str:
    h = hashlib.sha256()
    for name in SPLITS:
        s = splits[name]
        h.update(name.encode())
        h.update("\x00".join(s.ids).encode())
        h.update(np.ascontiguousarray(s.labels, dtype=np.float32).tobytes())
        for m in MODALITIES:
            h.update(np.ascontiguousarray(s.present[m]).tobytes())
            for x in s.frames[m]:
                h.update(np.int64(len(x)).tobytes())
                h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        for ids in s.text_ids or []:
            h.update(np.int64(len(ids)).tobytes())
            h.update(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
        if s.raw_text is not None:
            h.update("\x00".join(s.raw_text).encode())
    return h.hexdigest()[:16]


def _train_stats(train: SplitArrays, dims: dict[str, int]) -> tuple[dict, dict]:
    mean, std = {}, {}
    for m in MODALITIES:
        chunks = [x for x in train.frames[m] if len(x)]
        if chunks:
            allx = np.concatenate(chunks).astype(np.float64)
            mu, sd = allx.mean(0), allx.std(0)
        else:  # modality absent from the whole train split: no statistics to apply
            mu, sd = np.zeros(dims[m]), np.ones(dims[m])
        mean[m] = mu.tolist()
        # A constant feature must not be divided by zero; it stays centred instead.
        std[m] = np.where(sd > 1e-8, sd, 1.0).tolist()
    return mean, std


def _table(split: SplitArrays, meta: DatasetMeta) -> pa.Table:
    schema = arrow_schema(meta)
    columns: dict[str, pa.Array] = {
        "id": pa.array(split.ids, pa.string()),
        "label": pa.array(np.asarray(split.labels, dtype=np.float32)),
    }
    for m in MODALITIES:
        seqs = split.frames[m]
        lengths = np.array([len(x) for x in seqs], dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        d = meta.dims[m]
        flat = (
            np.concatenate([np.asarray(x, np.float32).reshape(-1, d) for x in seqs])
            if lengths.sum()
            else np.zeros((0, d), np.float32)
        )
        frames = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), d)
        columns[m] = pa.ListArray.from_arrays(pa.array(offsets), frames)
        columns[f"{m}_length"] = pa.array(lengths)
        columns[f"{m}_present"] = pa.array(np.asarray(split.present[m], dtype=bool))
    if split.text_ids is not None:
        columns["text_ids"] = pa.array(
            [np.asarray(t, dtype=np.int32) for t in split.text_ids], pa.list_(pa.int32())
        )
    if split.raw_text is not None:
        columns["raw_text"] = pa.array(split.raw_text, pa.string())
    return pa.Table.from_pydict(columns, schema=schema)


def write_dataset(out_dir: str | Path, splits: dict[str, SplitArrays], meta: DatasetMeta) -> Path:
    """Write ``splits`` (train/valid/test) under ``out_dir`` atomically; returns ``out_dir``.

    Every split is validated (`robustmsa.data.validate.validate_splits`) before anything is
    written; bad data raises `DataError` naming split, row, id and field. Fills
    ``meta.digest``, ``meta.optional_columns`` and the train-split feature statistics.
    """
    out = Path(out_dir)
    if out.exists():
        raise DataError(f"{out}: output directory already exists; remove it or choose another")
    validate_splits(out, splits, meta)
    meta.optional_columns = splits["train"].optional_columns()
    meta.digest = _digest(splits)
    meta.content_digests = {name: split_digest(name, splits[name]) for name in SPLITS}
    meta.feature_mean, meta.feature_std = _train_stats(splits["train"], meta.dims)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in SPLITS:
            # Row groups of ROW_GROUP_ROWS rows: readers stream the frames a group at a time.
            pq.write_table(
                _table(splits[name], meta), tmp / f"{name}.parquet", row_group_size=ROW_GROUP_ROWS
            )
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class FrameStore:
    """The standardised frames of one modality of one split, and how to pad a batch of them.

    ``values`` float32 ``(F + 1, d)``: the split's ``F`` frames standardised with the
    train-split statistics, back to back, then one zero row that padding positions gather;
    ``offsets`` int ``(N + 1,)`` where each row's frames start (``offsets[0] == 0``). ``values``
    is usually a read-only memory map (`robustmsa.data.frame_cache`).
    """

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.array = values
        with warnings.catch_warnings():
            # The mapped buffer is read-only; torch warns because it cannot mark the tensor so.
            # Nothing writes to it: rows are gathered into fresh tensors.
            warnings.simplefilter("ignore", UserWarning)
            self.values = torch.from_numpy(values)

    @classmethod
    def standardise(
        cls, raw: np.ndarray, offsets: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> FrameStore:
        """An in-memory store of raw frames ``raw`` ``(>= offsets[-1], d)`` whose rows start at
        ``offsets`` (``offsets[0]`` may be > 0: a slice), standardised with ``mean``/``std``."""
        offsets = np.asarray(offsets, dtype=np.int64)
        used = raw[int(offsets[0]) : int(offsets[-1])]
        values = np.zeros((len(used) + 1, raw.shape[1]), np.float32)
        standardise(used, mean, std, values[:-1])
        return cls(values, offsets - offsets[0])

    @property
    def frames(self) -> np.ndarray:
        """All ``F`` standardised frames ``(F, d)`` (without the padding row)."""
        return self.array[:-1]

    @property
    def num_frames(self) -> int:
        return len(self.array) - 1

    def padded(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` zero-padded: ``(B, T, d)`` and mask ``(B, T)``, with ``T`` the longest
        row in the batch (at least 1). One gather that reads only those rows' frames."""
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        t_max = max(int(lengths.max(initial=0)), 1)
        pos = np.arange(t_max)
        mask = pos[None, :] < lengths[:, None]  # (B, T)
        rows = np.where(mask, starts[:, None] + pos[None, :], self.num_frames)  # pad: zero row
        x = self.values.index_select(0, torch.from_numpy(rows.reshape(-1)))
        return x.view(len(idx), t_max, -1), torch.from_numpy(mask)


def token_store(col: pa.ListArray) -> FrameStore:
    """A ``text_ids`` column as a `FrameStore` of one int64 "feature" per token: its gather pads
    with the zero row, which is the pad id 0. ``padded(idx)`` gives ``(B, L, 1)`` and the mask."""
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = np.zeros((int(offsets[-1] - offsets[0]) + 1, 1), np.int64)
    values[:-1, 0] = col.values.to_numpy()[offsets[0] : offsets[-1]]
    return FrameStore(values, offsets - offsets[0])


class ParquetSplit:
    """One split: per-row columns in memory, frames memory-mapped from the frame cache
    (`robustmsa.data.frame_cache`); `batch(indices)` copies only the frames of those rows.

    Opening reads the file's schema and per-row columns (ids, labels, lengths, presence,
    optional columns) and validates them; the frames are validated when the cache is built.
    ``frame_cache`` is the cache root (default `frame_cache_root`).
    """

    def __init__(self, path: str | Path, frame_cache: str | Path | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: split file not found")
        try:
            parquet = pq.ParquetFile(self.path, memory_map=True)
            schema = parquet.schema_arrow
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{self.path}: not a readable Parquet file ({exc})") from exc
        self.meta = parse_meta(self.path, schema)
        validate_schema(self.path, schema, self.meta)
        try:
            rows = parquet.read(columns=[c for c in schema.names if c not in FRAME_COLUMNS])
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{self.path}: not a readable Parquet file ({exc})") from exc
        self.ids: list[str] = validate_rows(self.path, rows, self.meta)
        self.labels = torch.from_numpy(rows.column("label").to_numpy().astype(np.float32))
        lengths = {m: rows.column(f"{m}_length").to_numpy() for m in MODALITIES}
        present = {
            m: np.asarray(rows.column(f"{m}_present").to_numpy(zero_copy_only=False), bool)
            for m in MODALITIES
        }
        self._present = {m: torch.from_numpy(present[m].copy()) for m in MODALITIES}
        content = self._content_check(rows, lengths, present)
        try:
            mapped = load_frames(
                self.path,
                self.meta,
                lengths,
                present,
                self.ids,
                frame_cache_root(frame_cache),
                content=content,
            )
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{self.path}: frames unreadable ({exc})") from exc
        self.frames = {m: FrameStore(*mapped[m]) for m in MODALITIES}
        self.text_ids: FrameStore | None = None
        if "text_ids" in rows.column_names:
            self.text_ids = token_store(rows.column("text_ids").combine_chunks())

    def _content_check(self, rows: pa.Table, lengths: dict, present: dict):
        """``(sha256 fed with the rows, the digest recorded for this split)`` for the frame
        cache's build to finish and compare (`robustmsa.data.content_digest`); None when the
        dataset recorded none (written before content digests existed)."""
        split = self.path.stem
        expected = self.meta.content_digests.get(split)
        if expected is None:
            return None
        text = None
        if "text_ids" in rows.column_names:
            col = rows.column("text_ids").combine_chunks()
            counts = np.diff(col.offsets.to_numpy()).astype(np.int64)
            start, stop = col.offsets[0].as_py(), col.offsets[len(col)].as_py()
            text = (counts, col.values.to_numpy()[start:stop])
        raw_text = rows.column("raw_text").to_pylist() if "raw_text" in rows.column_names else None
        labels = rows.column("label").to_numpy()
        return rows_digest(split, self.ids, labels, present, lengths, text, raw_text), expected

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: np.ndarray | list[int]) -> Batch:
        """The rows ``indices`` as a standardised, padded `Batch` (T_m = longest in the batch);
        ``tokens``/``token_mask`` ``(B, L)`` from ``text_ids`` when the dataset has it."""
        idx = np.asarray(indices, dtype=np.int64)
        features, masks = {}, {}
        for m in MODALITIES:
            features[m], masks[m] = self.frames[m].padded(idx)
        tokens = token_mask = None
        if self.text_ids is not None:  # (B, L) ids padded with 0, L = longest row (>= 1)
            padded, token_mask = self.text_ids.padded(idx)
            tokens = padded.squeeze(-1)
        return Batch(
            features=features,
            masks=masks,
            present={m: self._present[m][idx] for m in MODALITIES},
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx.tolist()],
            tokens=tokens,
            token_mask=token_mask,
        )

    def batches(self, batch_size: int, order: np.ndarray | None = None):
        """Yield `Batch`es of ``batch_size`` rows in ``order`` (default: file order)."""
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size])


def open_dataset(
    path: str | Path, frame_cache: str | Path | None = None
) -> dict[str, ParquetSplit]:
    """The three splits of the dataset directory ``path``, each validated, cross-checked for
    identical metadata (same digest) and ids unique across splits. ``frame_cache``: the root
    of the frame cache (`robustmsa.data.frame_cache.frame_cache_root`)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found")
    splits = {name: ParquetSplit(root / f"{name}.parquet", frame_cache) for name in SPLITS}
    validate_dataset_splits(
        root, {n: s.meta for n, s in splits.items()}, {n: s.ids for n, s in splits.items()}
    )
    return splits
