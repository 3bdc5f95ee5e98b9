"""Strict checks of a dataset on write (`SplitArrays`) and on read (Parquet tables).

Every failure is a `DataError` whose message names where the problem is, in the form
``"<file>: row <i> (id '<id>'), field '<field>': <problem>"`` (on write, ``<file>`` is the
output directory followed by ``split '<name>'``). Nothing here writes anything: the writer
calls `validate_splits` before it creates a single file, and the reader calls `validate_table`
on each split and `validate_dataset_splits` across the three splits of a directory.

Checks on write (`validate_split_arrays`, `validate_splits`):

- the metadata: dims for exactly ``text, audio, vision`` (positive integers), a finite label
  range with ``lo < hi``;
- the split is not empty; ``labels``, ``present[m]``, ``frames[m]``, ``text_ids``,
  ``raw_text`` have one entry per id (so modality sources that disagree in sample count fail);
- ids are non-empty strings, unique within the split and across the three splits;
- labels are finite and inside the label range (checked on the float32 value that is stored);
- each frame array is numeric ``(T, d_m)`` and finite (writers receive sanitised data:
  importers sanitise); ``present[m]`` is bool and True exactly when the sample has frames;
- token ids are 1-D integers in ``[0, 2^31)``; raw texts are strings;
- the three splits agree on the optional columns.

Checks on read (`validate_schema`, `validate_rows`, `validate_frames` — `validate_table` runs
all three on a whole table; the reader streams the frames in chunks — and
`validate_dataset_splits`), all vectorised over the columns:

- the metadata: as on write, plus ``feature_mean``/``feature_std`` with ``dims[m]`` finite
  entries each (std > 0), a digest, known optional columns;
- no missing and no extra columns; every column has the schema's type (a frame size that is
  not ``dims[m]`` is reported as such); no nulls at any nesting level;
- the split is not empty; ids are non-empty and unique; labels finite and in range;
- ``m_length`` equals the number of frames of ``m`` (a length longer than the sequence is
  reported as such); ``m_present`` is True exactly when there are frames;
- every feature value is finite (one ``np.isfinite`` over the flat values; the first offending
  row, id, frame and feature are reported); token ids are non-negative;
- across splits: identical metadata (digest first) and ids unique across the splits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from robustmsa.data.batch import MODALITIES
from robustmsa.data.schema import METADATA_KEY, OPTIONAL_COLUMNS, SPLITS, DatasetMeta, arrow_schema
from robustmsa.errors import DataError

if TYPE_CHECKING:  # the writer's type; imported only for annotations (no import cycle)
    from robustmsa.data.parquet import SplitArrays

_INT32_MAX = 2**31 - 1


class _Where:
    """Builds the located error messages of one file (or one split being written):
    ``"<prefix>: [<context>, ][row <i> (id '<id>'), ][field '<f>']: <problem>"``."""

    def __init__(self, prefix: str | None, context: str | None = None):
        self.prefix = prefix
        self.context = context
        self.ids: Sequence[str] | None = None

    def error(self, problem: str, field: str | None = None, row: int | None = None) -> DataError:
        parts = [] if self.context is None else [self.context]
        if row is not None:
            where = f"row {row}"
            if self.ids is not None and 0 <= row < len(self.ids):
                where += f" (id {self.ids[row]!r})"
            parts.append(where)
        if field is not None:
            parts.append(f"field {field!r}")
        head = [self.prefix] if self.prefix else []
        return DataError(": ".join([*head, *([", ".join(parts)] if parts else []), problem]))


def _first(mask: np.ndarray) -> int:
    return int(np.argmax(mask))


def _presence_problem(present: bool, frames: int) -> str:
    if present:
        return "present (True) but the sequence has no frames"
    return f"absent (present=False) but the sequence has {frames} frames"


# --------------------------------------------------------------------------------- metadata


def parse_meta(path: str | Path, schema: pa.Schema) -> DatasetMeta:
    """The `DatasetMeta` stored in ``schema`` (of the file ``path``), validated."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DataError(f"{path}: no robustmsa metadata in the Parquet schema")
    try:
        meta = DatasetMeta.from_json(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: corrupt robustmsa metadata ({exc!r})") from exc
    validate_meta(path, meta, stored=True)
    return meta


def validate_meta(where: str | Path, meta: DatasetMeta, *, stored: bool = False) -> None:
    """Dims, label range and (``stored``: as read back from a file) the train statistics,
    digest and optional columns of ``meta``."""

    def bad(key: str, problem: str) -> DataError:
        return DataError(f"{where}: metadata {key!r}: {problem}")

    if not isinstance(meta.name, str) or not isinstance(meta.source, str):
        raise bad("name", f"name and source must be strings, got {meta.name!r}, {meta.source!r}")
    dims = meta.dims
    if not isinstance(dims, Mapping):
        raise bad("dims", f"expected a mapping of modality to dim, got {dims!r}")
    missing = [m for m in MODALITIES if m not in dims]
    extra = sorted(str(k) for k in dims if k not in MODALITIES)
    if missing or extra:
        problem = f"missing {missing}" if missing else f"unknown modalities {extra}"
        raise bad("dims", f"{problem} (need exactly {list(MODALITIES)})")
    for m in MODALITIES:
        d = dims[m]
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise bad("dims", f"{m}: dim must be a positive integer, got {d!r}")
    lr = meta.label_range
    try:
        lo, hi = (float(v) for v in lr)
    except (TypeError, ValueError) as exc:
        raise bad("label_range", f"expected two numbers, got {lr!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise bad("label_range", f"need finite lo < hi, got {lr!r}")
    if not stored:
        return
    if not isinstance(meta.digest, str) or not meta.digest:
        raise bad("digest", f"missing or not a string ({meta.digest!r})")
    unknown = [c for c in meta.optional_columns if c not in OPTIONAL_COLUMNS]
    if unknown:
        raise bad("optional_columns", f"unknown {unknown} (known: {list(OPTIONAL_COLUMNS)})")
    for key in ("feature_mean", "feature_std"):
        stats = getattr(meta, key)
        if not isinstance(stats, Mapping):
            raise bad(key, f"expected a mapping of modality to list, got {type(stats).__name__}")
        for m in MODALITIES:
            if m not in stats:
                raise bad(key, f"{m}: missing")
            try:
                v = np.asarray(stats[m], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise bad(key, f"{m}: not a list of numbers") from exc
            if v.shape != (dims[m],):
                raise bad(key, f"{m}: has shape {v.shape}, expected ({dims[m]},) (dims)")
            if not np.isfinite(v).all():
                raise bad(key, f"{m}: non-finite entry at feature {_first(~np.isfinite(v))}")
            if key == "feature_std" and (v <= 0).any():
                raise bad(key, f"{m}: std {v[_first(v <= 0)]} <= 0 at feature {_first(v <= 0)}")


# ----------------------------------------------------------------------------------- write


def validate_split_arrays(
    split_name: str, arrays: SplitArrays, meta: DatasetMeta, *, where: str | Path | None = None
) -> None:
    """Check one split before it is written (module docstring); ``where`` (the output
    directory) prefixes the messages."""
    w = _Where(None if where is None else str(where), f"split {split_name!r}")
    ids = arrays.ids
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise w.error(f"expected a list of strings, got {type(ids).__name__}", "id")
    n = len(ids)
    if n == 0:
        raise w.error("empty split (no rows)")
    w.ids = ids
    seen: dict[str, int] = {}
    for i, sid in enumerate(ids):
        if not isinstance(sid, str) or not sid:
            raise w.error(f"id must be a non-empty string, got {sid!r}", "id", i)
        if sid in seen:
            raise w.error(f"duplicate id {sid!r} (also at row {seen[sid]})", "id", i)
        seen[sid] = i

    def count(field: str, value: Any) -> None:
        got = len(value)
        if got != n:
            raise w.error(f"has {got} rows but 'id' has {n}", field)

    labels = np.asarray(arrays.labels)
    if labels.ndim != 1 or labels.dtype.kind not in "fiu":
        raise w.error(f"expected a 1-D numeric array, got {labels.dtype} {labels.shape}", "label")
    count("label", labels)
    with np.errstate(over="ignore", invalid="ignore"):
        stored = labels.astype(np.float32)
    _check_labels(w, stored, meta)

    for m in MODALITIES:
        if m not in arrays.frames:
            raise w.error("missing from frames", m)
        if m not in arrays.present:
            raise w.error("missing from present", f"{m}_present")
        seqs, present = arrays.frames[m], np.asarray(arrays.present[m])
        count(m, seqs)
        if present.ndim != 1 or present.dtype != np.bool_:
            got = f"{present.dtype} {present.shape}"
            raise w.error(f"expected a 1-D bool array, got {got}", f"{m}_present")
        count(f"{m}_present", present)
        d = meta.dims[m]
        for i, x in enumerate(seqs):
            x = np.asarray(x)
            if x.ndim != 2 or x.shape[1] != d:
                raise w.error(f"frames of shape {x.shape}, expected (T, {d}) (dims)", m, i)
            if x.dtype.kind not in "fiu":
                raise w.error(f"frames of dtype {x.dtype}, expected float32", m, i)
            with np.errstate(over="ignore", invalid="ignore"):
                finite = np.isfinite(x.astype(np.float32, copy=False))
            if not finite.all():
                t, j = np.argwhere(~finite)[0]
                v = x[t, j]
                raise w.error(
                    f"non-finite feature value {v} (as float32) at frame {t}, feature {j} "
                    "(importers must sanitise)",
                    m,
                    i,
                )
            if bool(present[i]) != (len(x) > 0):
                raise w.error(_presence_problem(bool(present[i]), len(x)), f"{m}_present", i)

    if arrays.text_ids is not None:
        count("text_ids", arrays.text_ids)
        for i, t in enumerate(arrays.text_ids):
            t = np.asarray(t)
            if t.ndim != 1 or (t.size and t.dtype.kind not in "iu"):
                got = f"{t.dtype} {t.shape}"
                raise w.error(f"expected 1-D integer token ids, got {got}", "text_ids", i)
            if t.size and (int(t.min()) < 0 or int(t.max()) > _INT32_MAX):
                bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
                raise w.error(f"token id {bad} outside [0, {_INT32_MAX}]", "text_ids", i)
    if arrays.raw_text is not None:
        count("raw_text", arrays.raw_text)
        for i, s in enumerate(arrays.raw_text):
            if not isinstance(s, str):
                raise w.error(f"expected a string, got {type(s).__name__}", "raw_text", i)


def validate_splits(
    where: str | Path, splits: Mapping[str, SplitArrays], meta: DatasetMeta
) -> None:
    """Check the metadata and the three splits before writing (module docstring)."""
    validate_meta(where, meta)
    names = sorted(splits)
    if names != sorted(SPLITS):
        raise DataError(f"{where}: expected splits {list(SPLITS)}, got {names}")
    optional = {name: splits[name].optional_columns() for name in SPLITS}
    if len({tuple(v) for v in optional.values()}) > 1:
        raise DataError(f"{where}: splits disagree on optional columns {optional}")
    for name in SPLITS:
        validate_split_arrays(name, splits[name], meta, where=where)
    clash = _id_clash({name: splits[name].ids for name in SPLITS})
    if clash:
        name, i, sid, other = clash
        raise DataError(
            f"{where}: split {name!r}, row {i} (id {sid!r}), field 'id': duplicate id across "
            f"splits (also in split {other!r})"
        )


def _id_clash(ids: Mapping[str, Sequence[str]]) -> tuple[str, int, str, str] | None:
    """The first id found in two splits: ``(split, row, id, earlier split)``, or None."""
    owner: dict[str, str] = {}
    for name, split_ids in ids.items():
        clash = owner.keys() & set(split_ids)
        if clash:
            i = next(k for k, sid in enumerate(split_ids) if sid in clash)
            return name, i, split_ids[i], owner[split_ids[i]]
        owner.update(dict.fromkeys(split_ids, name))
    return None


def _check_labels(w: _Where, labels: np.ndarray, meta: DatasetMeta) -> None:
    finite = np.isfinite(labels)
    if not finite.all():
        i = _first(~finite)
        raise w.error(f"label {float(labels[i])} is not finite", "label", i)
    lo, hi = (float(v) for v in meta.label_range)
    out = (labels < lo) | (labels > hi)
    if out.any():
        i = _first(out)
        raise w.error(f"label {float(labels[i])} outside the label range [{lo}, {hi}]", "label", i)


# ------------------------------------------------------------------------------------ read


def column_array(table: pa.Table, name: str) -> pa.Array:
    """Column ``name`` as one array: zero-copy when it has one chunk (one row group), else
    concatenated (``combine_chunks`` copies even a single chunk)."""
    col = table.column(name)
    if col.num_chunks == 1:
        return col.chunk(0)
    return col.combine_chunks()


def _first_null(arr: pa.Array) -> int:
    return _first(~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool))


FRAME_COLUMNS = MODALITIES  # the list-of-frames columns; every other column is per-row


def validate_table(path: str | Path, table: pa.Table, meta: DatasetMeta) -> None:
    """Check one whole split's table as read from ``path`` (module docstring): schema, the
    per-row columns, then every modality's frames."""
    validate_schema(path, table.schema, meta)
    rows = table.select([c for c in table.column_names if c not in FRAME_COLUMNS])
    ids = validate_rows(path, rows, meta)
    for m in MODALITIES:
        validate_frames(
            path,
            m,
            column_array(table, m),
            rows.column(f"{m}_length").to_numpy(),
            rows.column(f"{m}_present").to_numpy(zero_copy_only=False),
            meta,
            ids,
        )


def validate_schema(path: str | Path, schema: pa.Schema, meta: DatasetMeta) -> None:
    """The stored metadata, and the columns of ``schema`` against `arrow_schema` (no data)."""
    w = _Where(str(path))
    validate_meta(path, meta, stored=True)
    expected = arrow_schema(meta)
    names = schema.names
    missing = [c for c in expected.names if c not in names]
    if missing:
        raise w.error(f"missing columns {missing}")
    extra = [c for c in names if c not in expected.names]
    if extra:
        raise w.error(f"unexpected columns {extra} (optional columns: {meta.optional_columns})")
    if len(set(names)) != len(names):
        raise w.error(f"duplicate column names {names}")
    for f in expected:
        got = schema.field(f.name).type
        if got == f.type:
            continue
        if f.name in MODALITIES and _frame_size(got) is not None:
            raise w.error(
                f"frames of {_frame_size(got)} features, expected {meta.dims[f.name]} "
                "(metadata dims)",
                f.name,
            )
        raise w.error(f"column type {got}, expected {f.type}", f.name)


def validate_rows(path: str | Path, table: pa.Table, meta: DatasetMeta) -> list[str]:
    """Check the per-row columns (everything but the frames) of a whole split whose schema
    passed `validate_schema`; returns the ids (they name rows in later messages)."""
    w = _Where(str(path))
    n = table.num_rows
    if n == 0:
        raise w.error("empty split (no rows)")
    cols = {c: column_array(table, c) for c in table.column_names}
    if cols["id"].null_count:
        raise w.error("null value", "id", _first_null(cols["id"]))
    ids = cols["id"].to_pylist()
    w.ids = ids
    for c, arr in cols.items():
        if arr.null_count:
            raise w.error("null value", c, _first_null(arr))
    if len(set(ids)) != n:
        seen: dict[str, int] = {}
        for i, sid in enumerate(ids):
            if sid in seen:
                raise w.error(f"duplicate id {sid!r} (also at row {seen[sid]})", "id", i)
            seen[sid] = i
    empty = np.asarray(pc.equal(pc.utf8_length(cols["id"]), 0))
    if empty.any():
        raise w.error("empty id", "id", _first(empty))
    _check_labels(w, cols["label"].to_numpy(), meta)
    if "text_ids" in cols:
        col = cols["text_ids"]
        offsets = col.offsets.to_numpy()
        values = col.flatten()  # from offsets[0]
        if values.null_count:
            k = _first_null(values) + int(offsets[0])
            row = int(np.searchsorted(offsets, k, side="right")) - 1
            raise w.error("null token id", "text_ids", row)
        tokens = col.values.to_numpy()
        used = tokens[offsets[0] : offsets[-1]]
        neg = used < 0
        if neg.any():
            k = _first(neg) + int(offsets[0])
            row = int(np.searchsorted(offsets, k, side="right")) - 1
            raise w.error(f"negative token id {int(tokens[k])}", "text_ids", row)
    return ids


def validate_frames(
    path: str | Path,
    m: str,
    col: pa.ListArray,
    length: np.ndarray,
    present: np.ndarray,
    meta: DatasetMeta,
    ids: Sequence[str],
    row0: int = 0,
) -> None:
    """Check modality ``m``'s frames of rows ``row0 .. row0 + len(col)`` (the whole split, or
    one streamed chunk of it) against their ``m_length`` and ``m_present`` values; messages
    name split rows (``row0`` + the row in ``col``)."""
    w = _Where(str(path))
    w.ids = ids
    d = meta.dims[m]
    if col.null_count:
        raise w.error("null value", m, row0 + _first_null(col))
    offsets = col.offsets.to_numpy()
    frames = np.diff(offsets)

    def row_of(frame: int) -> int:
        return int(np.searchsorted(offsets, frame, side="right")) - 1

    fixed = col.values
    if fixed.null_count:  # a null frame inside a sequence
        frame = _first_null(fixed)
        row = row_of(frame)
        raise w.error(f"null frame {frame - offsets[row]}", m, row0 + row)
    flat_arr = fixed.flatten()
    if flat_arr.null_count:
        k = _first_null(flat_arr)
        row = row_of(k // d)
        raise w.error(
            f"null value at frame {k // d - offsets[row]}, feature {k % d}", m, row0 + row
        )
    # Only the frames the rows use (all of them, unless the column is a slice).
    flat = flat_arr.to_numpy()[int(offsets[0]) * d : int(offsets[-1]) * d]
    finite = np.isfinite(flat)
    if not finite.all():
        k = _first(~finite) + int(offsets[0]) * d
        flat = flat_arr.to_numpy()
        row = row_of(k // d)
        raise w.error(
            f"non-finite feature value {flat[k]} at frame {k // d - offsets[row]}, feature {k % d}",
            m,
            row0 + row,
        )
    wrong = length != frames
    if wrong.any():
        i = _first(wrong)
        how = "is longer than" if length[i] > frames[i] else "disagrees with"
        raise w.error(
            f"length {int(length[i])} {how} the sequence ({int(frames[i])} frames)",
            f"{m}_length",
            row0 + i,
        )
    present = np.asarray(present, dtype=bool)
    wrong = present != (frames > 0)
    if wrong.any():
        i = _first(wrong)
        raise w.error(_presence_problem(present[i], int(frames[i])), f"{m}_present", row0 + i)


def _frame_size(typ: pa.DataType) -> int | None:
    """``k`` when ``typ`` is a list of fixed-size lists of ``k`` float32, else None."""
    if not pa.types.is_list(typ):
        return None
    inner = typ.value_type
    if pa.types.is_fixed_size_list(inner) and inner.value_type == pa.float32():
        return inner.list_size
    return None


def validate_dataset_splits(
    root: str | Path,
    metas: Mapping[str, DatasetMeta],
    ids: Mapping[str, Sequence[str]],
) -> None:
    """Cross-check the three splits read from the directory ``root``: the same metadata
    (digest first) and no id in two splits."""
    root = Path(root)
    first = SPLITS[0]
    ref = metas[first]
    for name in SPLITS[1:]:
        meta = metas[name]
        path = root / f"{name}.parquet"
        if meta.digest != ref.digest:
            raise DataError(
                f"{path}: field 'digest' (metadata): {meta.digest!r} differs from "
                f"{ref.digest!r} in {root / f'{first}.parquet'} (splits of different datasets)"
            )
        if meta != ref:
            diff = [k for k in vars(ref) if getattr(meta, k) != getattr(ref, k)]
            raise DataError(
                f"{path}: metadata {diff} differ from {root / f'{first}.parquet'} "
                "(splits of different datasets)"
            )
    clash = _id_clash(ids)
    if clash:
        name, i, sid, other = clash
        raise DataError(
            f"{root / f'{name}.parquet'}: row {i} (id {sid!r}), field 'id': duplicate id across "
            f"splits (also in {root / f'{other}.parquet'})"
        )
