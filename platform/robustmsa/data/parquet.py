"""Write a dataset to Parquet and read it back as memory-mapped splits that hand out `Batch`es.

Writes are validated first (`robustmsa.data.validate`) and go to a temporary directory that is
renamed into place, so bad data or a failed write leaves nothing half-written. Reads memory-map
the file and validate it (vectorised) before use; a batch copies only its own frames.
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
from robustmsa.data.schema import (
    OPTIONAL_COLUMNS,
    SPLITS,
    DatasetMeta,
    arrow_schema,
)
from robustmsa.data.validate import (
    column_array,
    parse_meta,
    validate_dataset_splits,
    validate_splits,
    validate_table,
)
from robustmsa.errors import DataError


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
    meta.feature_mean, meta.feature_std = _train_stats(splits["train"], meta.dims)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in SPLITS:
            pq.write_table(_table(splits[name], meta), tmp / f"{name}.parquet")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class FrameStore:
    """The variable-length frames of one modality of one split, and how to pad a batch of them.

    ``raw`` float32 ``(F, d)`` holds every frame of the split back to back (a view of the
    file's column, unstandardised), ``offsets`` int ``(N + 1,)`` where each row's frames start,
    ``mean``/``std`` float32 ``(d,)`` the train-split statistics that standardise them.
    """

    def __init__(self, values: np.ndarray, offsets: np.ndarray, mean: np.ndarray, std: np.ndarray):
        self.raw, self.offsets, self.std = values, offsets, std
        with warnings.catch_warnings():
            # The mapped buffer is read-only; torch warns because it cannot mark the tensor so.
            # Nothing writes to it: rows are gathered into fresh tensors.
            warnings.simplefilter("ignore", UserWarning)
            self.values = torch.from_numpy(values)
        self.mean = torch.from_numpy(mean)
        self.inv_std = torch.from_numpy(1.0 / std)

    @property
    def num_frames(self) -> int:
        return int(self.offsets[-1] - self.offsets[0])

    def with_frames(self, values: np.ndarray, offsets: np.ndarray) -> FrameStore:
        """Other frames (e.g. a streamed block of rows) standardised with the same statistics."""
        return FrameStore(values, offsets, self.mean.numpy(), self.std)

    def padded(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` standardised and zero-padded: ``(B, T, d)`` and mask ``(B, T)``, with
        ``T`` the longest row in the batch (at least 1). Copies only those rows' frames."""
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        t_max = max(int(lengths.max(initial=0)), 1)
        pos = np.arange(t_max)
        mask = pos[None, :] < lengths[:, None]  # (B, T)
        rows = torch.from_numpy((starts[:, None] + pos[None, :])[mask])
        frames = self.values.index_select(0, rows).sub_(self.mean).mul_(self.inv_std)
        x = frames.new_zeros((len(idx) * t_max, frames.shape[1]))
        x.index_copy_(0, torch.from_numpy(np.flatnonzero(mask)), frames)
        return x.view(len(idx), t_max, -1), torch.from_numpy(mask)


class ParquetSplit:
    """One memory-mapped split; `batch(indices)` copies only the frames of those rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: split file not found")
        try:
            table = pq.read_table(self.path, memory_map=True)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{self.path}: not a readable Parquet file ({exc})") from exc
        self.meta = parse_meta(self.path, table.schema)
        validate_table(self.path, table, self.meta)
        self.ids: list[str] = table.column("id").to_pylist()
        self.labels = torch.from_numpy(table.column("label").to_numpy().astype(np.float32))
        self._present: dict[str, torch.Tensor] = {}
        self.frames: dict[str, FrameStore] = {}
        for m in MODALITIES:
            col = column_array(table, m)
            self.frames[m] = FrameStore(
                col.values.flatten().to_numpy().reshape(-1, self.meta.dims[m]),
                col.offsets.to_numpy(),
                np.asarray(self.meta.feature_mean[m], np.float32),
                np.asarray(self.meta.feature_std[m], np.float32),
            )
            self._present[m] = torch.from_numpy(
                table.column(f"{m}_present").to_numpy(zero_copy_only=False).copy()
            )

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: np.ndarray | list[int]) -> Batch:
        """The rows ``indices`` as a standardised, padded `Batch` (T_m = longest in the batch)."""
        idx = np.asarray(indices, dtype=np.int64)
        features, masks = {}, {}
        for m in MODALITIES:
            features[m], masks[m] = self.frames[m].padded(idx)
        return Batch(
            features=features,
            masks=masks,
            present={m: self._present[m][idx] for m in MODALITIES},
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx.tolist()],
        )

    def batches(self, batch_size: int, order: np.ndarray | None = None):
        """Yield `Batch`es of ``batch_size`` rows in ``order`` (default: file order)."""
        order = np.arange(len(self)) if order is None else order
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size])


def open_dataset(path: str | Path) -> dict[str, ParquetSplit]:
    """The three splits of the dataset directory ``path``, each validated, cross-checked for
    identical metadata (same digest) and ids unique across splits."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: dataset directory not found")
    splits = {name: ParquetSplit(root / f"{name}.parquet") for name in SPLITS}
    validate_dataset_splits(
        root, {n: s.meta for n, s in splits.items()}, {n: s.ids for n, s in splits.items()}
    )
    return splits
