"""MMSA feature pickles (``aligned_50.pkl``, ``unaligned_50.pkl``, ``unaligned_39.pkl``) to Parquet.

An MMSA file is ``{"train": {...}, "valid": {...}, "test": {...}}``; each split holds ``id``
(``"video$_$clip"``), ``raw_text``, ``text`` ``(N, L, d_t)``, optionally ``text_bert``
``(N, 3, L)`` (token ids, attention mask, segment ids), ``audio`` ``(N, T_a, d_a)``, ``vision``
``(N, T_v, d_v)``, in unaligned files ``audio_lengths`` and ``vision_lengths``, and
``regression_labels`` (CH-SIMS also ``regression_labels_T/A/V``). Other keys (``annotations``,
``classification_labels``) are ignored.

How lengths are decided (frames past a sample's length are padding and are dropped):

- text: the attention-mask sum when ``text_bert`` is there (the mask must be a prefix of ones;
  ``[CLS]``/``[SEP]`` positions are kept, so text frames line up with ``text_ids``); without
  ``text_bert``, the index of the last frame that is not all zero, plus one (zero frames
  *inside* the sequence are kept);
- audio/vision with ``{m}_lengths`` (unaligned files): that length, ``0 <= len <= T_m``;
- audio/vision without it (aligned files, word-aligned to the text positions): the text length;
  such a modality must have exactly ``L`` frames, else the file is taken to be unaligned with
  its lengths missing and is refused.

A modality whose length is 0 for a sample is absent for it (``m_present = false``).

Features are cast to float32 and every non-finite value in a *kept* frame (``-inf`` in audio is
the known case; NaN, ``+inf`` and float64 values beyond float32 range too) is set to 0 and
counted in ``sanitized``; values in dropped padding frames are not counted.

The schema has no column for the CH-SIMS unimodal labels ``regression_labels_T/A/V``: they are
validated (one finite value per row) but not stored, and the summary says so. Any of them can
be made *the* label with ``label_key``.

Loading a pickle runs code: nothing is opened without ``trust_pickle=True``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.data.batch import MODALITIES
from robustmsa.data.importers.summary import ImportSummary, progress
from robustmsa.data.parquet import SplitArrays, write_dataset
from robustmsa.data.schema import SPLITS, DatasetMeta
from robustmsa.errors import DataError

UNIMODAL_LABELS: tuple[str, ...] = (
    "regression_labels_T",
    "regression_labels_A",
    "regression_labels_V",
)
_REQUIRED_KEYS: tuple[str, ...] = ("id", "raw_text", "text", "audio", "vision")
_INT32_MAX = np.iinfo(np.int32).max
_CHUNK = 1024  # rows per chunk where a whole-split temporary would be large


@dataclass
class MMSAImportSummary(ImportSummary):
    """`ImportSummary` plus notes on what the import did not store."""

    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        return "\n".join([super().format(), *(f"  note: {n}" for n in self.notes)])


def _refuse_untrusted(src: Path) -> DataError:
    return DataError(
        f"{src}: refusing to unpickle without --trust-pickle (a pickle can run arbitrary code)"
    )


def _load_trusted_pickle(src: Path, trust_pickle: bool) -> Any:
    """Unpickle ``src``, only when the caller said it trusts the file (unpickling runs code)."""
    if not trust_pickle:  # checked again here, next to the load: never unpickle untrusted files
        raise _refuse_untrusted(src)
    try:
        with open(src, "rb") as f:
            return pickle.load(f)  # trusted: trust_pickle=True was passed explicitly
    except MemoryError:
        raise
    except Exception as exc:
        raise DataError(f"{src}: not a readable pickle ({type(exc).__name__}: {exc})") from exc


class _Split:
    """Error messages naming the file, the split and, where known, the row, id and field."""

    def __init__(self, src: Path, name: str, data: Mapping):
        self.src, self.name, self.data = src, name, data
        self.ids: list[str] | None = None

    def error(self, msg: str, key: str | None = None, row: int | None = None) -> DataError:
        where = [f"split {self.name!r}"]
        if row is not None:
            where.append(f"row {row}" + (f" (id {self.ids[row]!r})" if self.ids else ""))
        if key is not None:
            where.append(f"field {key!r}")
        return DataError(f"{self.src}: {', '.join(where)}: {msg}")

    def array(self, key: str, ndim: int, n: int | None) -> np.ndarray:
        """``data[key]`` as a numeric array of ``ndim`` dimensions and ``n`` rows."""
        try:
            arr = np.asarray(self.data[key])
        except (TypeError, ValueError) as exc:
            raise self.error(f"not an array ({exc})", key) from exc
        if ndim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.reshape(-1)  # labels stored as (N, 1)
        if arr.ndim != ndim:
            raise self.error(f"expected {ndim} dimensions, got shape {arr.shape}", key)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise self.error(f"expected numbers, got dtype {arr.dtype}", key)
        if n is not None and len(arr) != n:
            raise self.error(f"has {len(arr)} rows but 'id' has {n}", key)
        return arr

    def strings(self, key: str, n: int | None) -> list[str]:
        value = self.data[key]
        if isinstance(value, np.ndarray) and value.ndim != 1:
            raise self.error(f"expected one string per row, got shape {value.shape}", key)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise self.error(f"expected a sequence of strings, got {type(value).__name__}", key)
        out = []
        for i, v in enumerate(value):
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise self.error(f"not UTF-8 ({exc})", key, i) from exc
            if not isinstance(v, str):
                raise self.error(f"expected a string, got {type(v).__name__}", key, i)
            out.append(str(v))
        if n is not None and len(out) != n:
            raise self.error(f"has {len(out)} rows but 'id' has {n}", key)
        return out

    def integral(self, arr: np.ndarray, key: str) -> np.ndarray:
        """``arr`` (1-D) as int64, refusing non-integral values."""
        bad = ~np.isfinite(arr) | (arr != np.round(arr)) if arr.dtype.kind == "f" else None
        if bad is not None and bad.any():
            i = int(np.argmax(bad))
            raise self.error(f"length {float(arr[i])} is not an integer", key, i)
        return arr.astype(np.int64)


def _check_keys(sp: _Split, label_key: str) -> None:
    for key in (*_REQUIRED_KEYS, label_key):
        if key not in sp.data:
            found = sorted(map(str, sp.data))
            raise sp.error(f"missing key {key!r} (keys present: {found})", key)


def _text_lengths(sp: _Split, text: np.ndarray, n: int) -> tuple[np.ndarray, list | None]:
    """Text lengths per row and, with ``text_bert``, the token ids cut to those lengths."""
    L = text.shape[1]
    if "text_bert" not in sp.data:
        lengths = np.zeros(n, np.int64)
        for start in range(0, n, _CHUNK):
            data = np.any(text[start : start + _CHUNK] != 0, axis=2)  # (chunk, L)
            last = L - np.argmax(data[:, ::-1], axis=1)
            lengths[start : start + _CHUNK] = np.where(data.any(axis=1), last, 0)
        return lengths, None
    bert = sp.array("text_bert", 3, n)
    if bert.shape[1:] != (3, L):
        raise sp.error(f"expected shape (N, 3, {L}) to match 'text', got {bert.shape}", "text_bert")
    mask = bert[:, 1, :]
    not_binary = ~((mask == 0) | (mask == 1)).all(axis=1)
    if not_binary.any():
        i = int(np.argmax(not_binary))
        raise sp.error(
            "attention mask (text_bert[:, 1]) holds values other than 0/1", "text_bert", i
        )
    lengths = mask.sum(axis=1).astype(np.int64)
    prefix = np.arange(L)[None, :] < lengths[:, None]
    not_prefix = (prefix != (mask == 1)).any(axis=1)
    if not_prefix.any():
        i = int(np.argmax(not_prefix))
        raise sp.error("attention mask (text_bert[:, 1]) is not a prefix of ones", "text_bert", i)
    tokens = bert[:, 0, :]
    valid = tokens[prefix]
    if tokens.dtype.kind == "f":
        bad_value = ~np.isfinite(valid) | (valid != np.round(valid))
    else:
        bad_value = np.zeros(valid.shape, bool)
    bad_value |= (valid < 0) | (valid > _INT32_MAX)
    if bad_value.any():
        bad_rows = np.zeros(prefix.shape, bool)
        bad_rows[prefix] = bad_value
        i = int(np.argmax(bad_rows.any(axis=1)))
        raise sp.error(
            "token ids (text_bert[:, 0]) must be integers in int32 range", "text_bert", i
        )
    text_ids = [tokens[i, : lengths[i]].astype(np.int32) for i in range(n)]
    return lengths, text_ids


def _modality_lengths(sp: _Split, m: str, arr: np.ndarray, text_len: np.ndarray, L: int):
    key = f"{m}_lengths"
    T = arr.shape[1]
    if key not in sp.data:
        if T != L:
            raise sp.error(
                f"has {T} frames per row but 'text' has {L} and there is no {key!r} "
                "(an aligned file has equal frame counts; an unaligned one needs the lengths)",
                m,
            )
        return text_len
    lengths = sp.integral(sp.array(key, 1, len(arr)), key)
    bad = (lengths < 0) | (lengths > T)
    if bad.any():
        i = int(np.argmax(bad))
        raise sp.error(f"length {int(lengths[i])} outside [0, {T}] ({m} has {T} frames)", key, i)
    return lengths


def _kept_frames(arr: np.ndarray, lengths: np.ndarray) -> tuple[list[np.ndarray], int]:
    """The first ``lengths[i]`` frames of each row as float32, non-finite values set to 0."""
    frames, sanitized = [], 0
    with np.errstate(over="ignore", invalid="ignore"):
        for i, t in enumerate(lengths.tolist()):
            x = np.array(arr[i, :t], dtype=np.float32)
            bad = ~np.isfinite(x)
            if bad.any():
                sanitized += int(bad.sum())
                x[bad] = 0.0
            frames.append(x)
    return frames, sanitized


def _labels(sp: _Split, key: str, n: int) -> np.ndarray:
    labels = sp.array(key, 1, n).astype(np.float64)
    bad = ~np.isfinite(labels)
    if bad.any():
        i = int(np.argmax(bad))
        raise sp.error(f"label {float(labels[i])} is not finite", key, i)
    return labels


def _convert_split(
    src: Path, name: str, data: Any, label_key: str
) -> tuple[SplitArrays, np.ndarray, dict[str, int], int, list[str]]:
    """One split: its arrays, float64 labels, feature dims, sanitised count, unimodal keys."""
    if not isinstance(data, Mapping):
        raise DataError(f"{src}: split {name!r}: expected a dict, got {type(data).__name__}")
    sp = _Split(src, name, data)
    _check_keys(sp, label_key)
    ids = sp.strings("id", None)
    n = len(ids)
    first: dict[str, int] = {}
    for i, sid in enumerate(ids):
        if sid in first:
            raise sp.error(f"duplicate id {sid!r} (also at row {first[sid]})", "id", i)
        first[sid] = i
    sp.ids = ids
    raw_text = sp.strings("raw_text", n)
    feats = {m: sp.array(m, 3, n) for m in MODALITIES}
    L = feats["text"].shape[1]
    text_len, text_ids = _text_lengths(sp, feats["text"], n)
    lengths = {"text": text_len}
    for m in ("audio", "vision"):
        lengths[m] = _modality_lengths(sp, m, feats[m], text_len, L)
    labels = _labels(sp, label_key, n)
    unimodal = [k for k in UNIMODAL_LABELS if k in data and k != label_key]
    for k in unimodal:
        _labels(sp, k, n)
    frames, sanitized = {}, 0
    for m in MODALITIES:
        frames[m], count = _kept_frames(feats[m], lengths[m])
        sanitized += count
    arrays = SplitArrays(
        ids=ids,
        labels=labels.astype(np.float32),
        frames=frames,
        present={m: lengths[m] > 0 for m in MODALITIES},
        text_ids=text_ids,
        raw_text=raw_text,
    )
    dims = {m: int(feats[m].shape[2]) for m in MODALITIES}
    return arrays, labels, dims, sanitized, unimodal


def import_mmsa(
    src: Path,
    out: Path,
    *,
    trust_pickle: bool = False,
    name: str | None = None,
    label_key: str = "regression_labels",
    label_range: tuple[float, float] | None = None,
    show_progress: bool = True,
) -> ImportSummary:
    """Import the MMSA pickle ``src`` to the new dataset directory ``out``.

    ``trust_pickle`` must be True: unpickling runs code from the file. ``name`` defaults to the
    file's stem. ``label_key`` picks the label (e.g. ``regression_labels_T`` on CH-SIMS).
    ``label_range`` defaults to (-1, 1) when every label has ``|y| <= 1`` (CH-SIMS), else
    (-3, 3) (MOSI, MOSEI); labels outside the range are refused. Returns an
    `MMSAImportSummary` whose ``notes`` name the unimodal labels that were not stored.
    """
    src, out = Path(src), Path(out)
    if not trust_pickle:
        raise _refuse_untrusted(src)  # before the file is even opened
    if not src.is_file():
        raise DataError(f"{src}: MMSA pickle not found")
    if out.exists():  # fail before a long unpickle, not after it
        raise DataError(f"{out}: output directory already exists; remove it or choose another")
    if label_range is not None and not label_range[0] < label_range[1]:
        raise DataError(f"{src}: label range {label_range} is empty (need lo < hi)")
    raw = _load_trusted_pickle(src, trust_pickle)
    if not isinstance(raw, Mapping):
        raise DataError(f"{src}: expected a dict of splits, got {type(raw).__name__}")
    for split in SPLITS:
        if split not in raw:
            found = sorted(map(str, raw))
            raise DataError(f"{src}: split {split!r}: missing (keys present: {found})")

    splits: dict[str, SplitArrays] = {}
    labels: dict[str, np.ndarray] = {}
    dims: dict[str, int] | None = None
    sanitized = 0
    unimodal: set[str] = set()
    for split in progress(SPLITS, len(SPLITS), f"mmsa {src.name}", show_progress):
        arrays, y, split_dims, count, uni = _convert_split(src, split, raw[split], label_key)
        if dims is not None:
            for m in MODALITIES:
                if split_dims[m] != dims[m]:
                    raise DataError(
                        f"{src}: split {split!r}, field {m!r}: feature dim {split_dims[m]} "
                        f"differs from train's {dims[m]}"
                    )
        dims = split_dims
        splits[split], labels[split] = arrays, y
        sanitized += count
        unimodal.update(uni)
    with_bert = [s for s in SPLITS if splits[s].text_ids is not None]
    if with_bert and len(with_bert) < len(SPLITS):
        lacking = next(s for s in SPLITS if s not in with_bert)
        raise DataError(
            f"{src}: split {lacking!r}, field 'text_bert': missing, but split "
            f"{with_bert[0]!r} has it (all splits or none)"
        )
    del raw
    assert dims is not None

    if label_range is None:
        peak = max(float(np.abs(y).max(initial=0.0)) for y in labels.values())
        label_range = (-1.0, 1.0) if peak <= 1.0 else (-3.0, 3.0)
    lo, hi = float(label_range[0]), float(label_range[1])
    for split in SPLITS:
        y = labels[split]
        bad = (y < lo) | (y > hi)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{src}: split {split!r}, row {i} (id {splits[split].ids[i]!r}), field "
                f"{label_key!r}: label {float(y[i])} outside the label range [{lo}, {hi}]"
            )

    source = f"mmsa:{src.name}"
    meta = DatasetMeta(name=name or src.stem, dims=dims, label_range=(lo, hi), source=source)
    write_dataset(out, splits, meta)
    summary = MMSAImportSummary.of(out, source, meta.digest, splits, sanitized)
    if unimodal:
        keys = ", ".join(sorted(unimodal))
        summary.notes.append(
            f"unimodal labels {keys} validated but not stored (the schema has no column for them)"
        )
    return summary
