"""MFN-style HDF5 folders (the Memory Fusion Network release layout) to Parquet.

A folder holds, per split ``s`` in ``train, valid, test``:

- ``text_{s}_emb.h5`` (text), ``audio_{s}.h5`` (audio), ``video_{s}.h5`` or ``vision_{s}.h5``
  (our ``vision``): word-aligned features ``(N, T, d)``, zero-padded at the *front*;
- ``y_{s}.h5``: labels ``(N,)`` or ``(N, 1)``; or ``(N, K)`` with ``label_column`` (take
  column ``K``) or ``label_values`` (one-hot rows mapped to ``label_values[k]``).

Each file holds exactly one dataset, named ``d1`` (or ``data``, as in ``cmu-mosi-labels``);
any other content is refused, naming the file and what it holds. Other files in the folder
are ignored (the summary notes the ``.h5`` ones).

Rules (decided here; the source format does not say):

- **Absent files**: a split with no file for a modality has that modality absent for every
  sample of the split (``m_present = false``, zero frames), never zero-filled. A modality with
  no file in any split is an error (its feature dim cannot be known). The labels file is
  required in every split.
- **Padding**: on the source (float64) values, a frame is all-zero when every value is exactly
  0 (a NaN is not zero). MFN pads each sample at the front, the same number of steps in every
  modality (the features are word-aligned). The padding of a sample is therefore the leading
  steps at which *every* modality of its split is all-zero; they are removed from all
  modalities alike, so the modalities stay aligned step by step. All-zero frames after that are
  kept as data (the real files hold zero frames inside a sequence, e.g. words with no face
  detected in the video, which a per-modality rule would mistake for padding and so shift the
  video against the words).
- **Samples without data**: a sample whose frames of a modality hold no finite non-zero value
  (all zero, or non-finite throughout) has no data for it: that modality is made absent for
  the sample (``present = false``, zero frames; never present zeros), counted per split and
  modality in ``MFNImportSummary.all_zero`` and noted in the summary.
- **Values**: cast float64 -> float32; every non-finite value of a kept frame (NaN, +-inf, and
  float64 values beyond the float32 range) is set to 0 and counted in ``sanitized``. Padding
  frames hold only zeros, so every non-finite value of a file is counted.
- **Consistency**: all files of a split have the same sample count and, the modalities being
  aligned step by step, the same number of steps; a modality has the same feature dim in
  every split; labels have the same number of columns in every split.
- **Ids**: the files carry none, so sample ``i`` of split ``s`` is ``f"{s}-{i:05d}"``.
- **Label range**: ``label_range`` when given (labels outside it are refused), else
  ``(floor(min), ceil(max))`` over all splits (``(lo, lo + 1)`` if that is empty).
- ``name`` defaults to the folder name; the source string is ``"mfn:<folder name>"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustmsa.data.batch import MODALITIES
from robustmsa.data.importers.labels import first_outside, label_range_of
from robustmsa.data.importers.summary import ImportSummary, progress
from robustmsa.data.parquet import SplitArrays, write_dataset
from robustmsa.data.schema import SPLITS, DatasetMeta
from robustmsa.errors import DataError

# File names per modality, in order of preference (at most one may exist per split).
MODALITY_FILES: dict[str, tuple[str, ...]] = {
    "text": ("text_{split}_emb.h5",),
    "audio": ("audio_{split}.h5",),
    "vision": ("video_{split}.h5", "vision_{split}.h5"),
}
LABEL_FILE = "y_{split}.h5"
DATASET_NAMES: tuple[str, ...] = ("d1", "data")


@dataclass
class MFNImportSummary(ImportSummary):
    """`ImportSummary` plus the samples made absent because all their frames were zero
    (``all_zero[split][modality]``) and notes."""

    all_zero: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        return "\n".join([super().format(), *(f"  note: {n}" for n in self.notes)])


@dataclass
class _Probe:
    """One file's single dataset, before its values are read."""

    path: Path
    dataset: str
    shape: tuple[int, ...]


def _h5py():
    import h5py  # imported lazily: only the HDF5 importers need it

    return h5py


def _open(path: Path):
    h5py = _h5py()
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc


def _probe(path: Path, kind: str) -> _Probe:
    """Name, shape and dtype of the one dataset of ``path``; ``kind`` is ``features`` or
    ``labels``."""
    h5py = _h5py()
    with _open(path) as f:
        found = sorted(f.keys())
        if len(found) != 1 or found[0] not in DATASET_NAMES:
            names = " or ".join(repr(n) for n in DATASET_NAMES)
            raise DataError(f"{path}: expected one dataset named {names}, found {found}")
        obj = f[found[0]]
        if not isinstance(obj, h5py.Dataset):
            raise DataError(f"{path}: {found[0]!r} is a group, expected a dataset")
        shape, dtype = tuple(int(s) for s in obj.shape), obj.dtype
    where = f"{path}: dataset {found[0]!r}"
    if dtype.kind not in "fiub":
        raise DataError(f"{where}: expected numbers, got dtype {dtype}")
    if kind == "features" and len(shape) != 3:
        raise DataError(f"{where}: expected features of shape (N, T, d), got {shape}")
    if kind == "features" and shape[2] < 1:
        raise DataError(f"{where}: features have no feature dimension (shape {shape})")
    if kind == "labels" and len(shape) not in (1, 2):
        raise DataError(f"{where}: expected labels of shape (N,) or (N, K), got {shape}")
    return _Probe(path, found[0], shape)


def _read(probe: _Probe) -> np.ndarray:
    with _open(probe.path) as f:
        return np.asarray(f[probe.dataset][()], dtype=np.float64)


def _find_files(src: Path) -> tuple[dict[str, dict[str, Path]], dict[str, Path], list[str]]:
    """Feature files per split and modality (absent ones left out), label files per split,
    and the names of ``.h5`` files this layout does not use."""
    used: set[str] = set()
    features: dict[str, dict[str, Path]] = {s: {} for s in SPLITS}
    labels: dict[str, Path] = {}
    for s in SPLITS:
        for m in MODALITIES:
            hits = [src / p.format(split=s) for p in MODALITY_FILES[m]]
            hits = [p for p in hits if p.is_file()]
            if len(hits) > 1:
                names = " and ".join(p.name for p in hits)
                raise DataError(f"{src}: both {names} exist (modality {m!r}); keep one")
            if hits:
                features[s][m] = hits[0]
                used.add(hits[0].name)
        y = src / LABEL_FILE.format(split=s)
        if not y.is_file():
            raise DataError(f"{y}: labels file of split {s!r} not found")
        labels[s] = y
        used.add(y.name)
    for m in MODALITIES:
        if not any(m in features[s] for s in SPLITS):
            looked = ", ".join(p.format(split=s) for s in SPLITS for p in MODALITY_FILES[m])
            raise DataError(
                f"{src}: modality {m!r}: no file in any split (looked for {looked}); its "
                "feature dim cannot be known"
            )
    unused = sorted(p.name for p in src.glob("*.h5") if p.name not in used)
    return features, labels, unused


def _label_columns(
    probe: _Probe, label_column: int | None, label_values: list[float] | None
) -> None:
    """Refuse label shapes the options cannot turn into one label per row."""
    k = probe.shape[1] if len(probe.shape) == 2 else 1
    where = f"{probe.path}: dataset {probe.dataset!r}"
    if label_column is not None and not 0 <= label_column < k:
        raise DataError(f"{where}: label column {label_column} out of range (labels have {k})")
    if label_values is not None and len(label_values) != k:
        raise DataError(
            f"{where}: {len(label_values)} label values given but the one-hot labels have {k} "
            "columns"
        )
    if k > 1 and label_column is None and label_values is None:
        raise DataError(
            f"{where}: labels have {k} columns (shape {probe.shape}); pass --label-column K "
            "to take column K, or --label-values v0,...,v{k-1} to map one-hot rows to values"
        )


def _labels(
    probe: _Probe, raw: np.ndarray, label_column: int | None, label_values: list[float] | None
) -> np.ndarray:
    """One float64 label per row of ``raw`` (shape checked by `_label_columns`)."""
    where = f"{probe.path}: dataset {probe.dataset!r}"
    table = raw.reshape(len(raw), -1)
    bad = ~np.isfinite(table)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"{where}, row {i}, column {j}: label {table[i, j]} is not finite")
    if label_values is not None:
        binary = ((table == 0) | (table == 1)).all(axis=1)
        bad_row = ~binary | (table.sum(axis=1) != 1)
        if bad_row.any():
            i = int(np.argmax(bad_row))
            raise DataError(
                f"{where}, row {i}: not a one-hot row (need exactly one 1 and zeros elsewhere), "
                f"got {table[i].tolist()}"
            )
        return np.asarray(label_values, np.float64)[np.argmax(table, axis=1)]
    return table[:, label_column or 0].copy()


def _first_data_step(raw: np.ndarray) -> np.ndarray:
    """Per sample ``(N,)`` the first step whose frame is not all zero (``T`` when none is)."""
    nonzero = (raw != 0).any(axis=2)  # (N, T); NaN != 0, so a NaN frame is data
    return np.where(nonzero.any(axis=1), np.argmax(nonzero, axis=1), raw.shape[1])


def _frames(raw: np.ndarray, first: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, int, int]:
    """Per sample the frames from step ``first[i]`` on (float32, sanitised); presence (some
    frame is not all zero); the number of non-finite values set to 0; the number of all-zero
    samples."""
    n = raw.shape[0]
    has_data = ((raw != 0) & np.isfinite(raw)).any(axis=(1, 2))
    with np.errstate(over="ignore", invalid="ignore"):
        x = raw.astype(np.float32)
    bad = ~np.isfinite(x)
    sanitized = int(bad.sum())
    x[bad] = 0.0
    frames = [x[i, first[i] :] if has_data[i] else x[i, :0] for i in range(n)]
    return frames, has_data, sanitized, int((~has_data).sum())


def _check_counts(src: Path, split: str, probes: dict[str, _Probe]) -> int:
    counts = {p.path.name: p.shape[0] for p in probes.values()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{f} has {c}" for f, c in counts.items())
        raise DataError(f"{src}: split {split!r}: sample counts disagree: {listed}")
    steps = {p.path.name: p.shape[1] for m, p in probes.items() if m != "label"}
    if len(set(steps.values())) > 1:
        listed = ", ".join(f"{f} has {t}" for f, t in steps.items())
        raise DataError(
            f"{src}: split {split!r}: step counts disagree: {listed} (MFN's modalities are "
            "aligned step by step)"
        )
    n = next(iter(counts.values()))
    if n == 0:
        raise DataError(f"{probes['label'].path}: split {split!r} has no samples")
    return n


def import_mfn(
    src: Path,
    out: Path,
    *,
    name: str | None = None,
    label_column: int | None = None,
    label_values: list[float] | None = None,
    label_range: tuple[float, float] | None = None,
    show_progress: bool = True,
) -> MFNImportSummary:
    """Import the MFN-style HDF5 folder ``src`` to the new dataset directory ``out``.

    The layout and every rule are in the module docstring. ``label_column`` and
    ``label_values`` (exclusive) turn ``(N, K)`` labels into one label per row. Raises
    `DataError` naming the file (and row or field) on bad input; nothing is written then.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(f"{src}: MFN folder not found")
    if out.exists():
        raise DataError(f"{out}: output directory already exists; remove it or choose another")
    if label_column is not None and label_values is not None:
        raise DataError(f"{src}: pass either a label column or label values, not both")
    if label_range is not None:
        lo, hi = (float(v) for v in label_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise DataError(f"{src}: label range {tuple(label_range)} is empty (need lo < hi)")
    folder = src.resolve().name
    feature_files, label_files, unused = _find_files(src)

    # Pass 1: shapes only (cheap), so inconsistent folders fail before any value is read.
    probes: dict[str, dict[str, _Probe]] = {}
    counts: dict[str, int] = {}
    dims: dict[str, _Probe] = {}
    label_cols: _Probe | None = None
    for s in SPLITS:
        probes[s] = {"label": _probe(label_files[s], "labels")}
        for m, path in feature_files[s].items():
            p = probes[s][m] = _probe(path, "features")
            if m in dims and dims[m].shape[2] != p.shape[2]:
                raise DataError(
                    f"{path}: feature dim {p.shape[2]} (modality {m!r}) differs from "
                    f"{dims[m].shape[2]} in {dims[m].path.name}"
                )
            dims.setdefault(m, p)
        counts[s] = _check_counts(src, s, probes[s])
        y = probes[s]["label"]
        _label_columns(y, label_column, label_values)
        k = y.shape[1] if len(y.shape) == 2 else 1
        if label_cols is not None:
            k0 = label_cols.shape[1] if len(label_cols.shape) == 2 else 1
            if k != k0:
                raise DataError(
                    f"{y.path}: labels have {k} columns but {label_cols.path.name} has {k0}"
                )
        label_cols = label_cols or y

    # Pass 2: the values, one split at a time (the padding is decided across its modalities).
    labels: dict[str, np.ndarray] = {}
    frames: dict[str, dict[str, list[np.ndarray]]] = {s: {} for s in SPLITS}
    present: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    all_zero = {s: dict.fromkeys(MODALITIES, 0) for s in SPLITS}
    sanitized = 0
    for s in progress(SPLITS, len(SPLITS), f"mfn {folder}", show_progress):
        labels[s] = _labels(probes[s]["label"], _read(probes[s]["label"]), label_column,
                            label_values)  # fmt: skip
        raws = {m: _read(p) for m, p in probes[s].items() if m != "label"}
        first = np.min([_first_data_step(raw) for raw in raws.values()], axis=0)
        for m, raw in raws.items():
            frames[s][m], present[s][m], count, zeros = _frames(raw, first)
            sanitized += count
            all_zero[s][m] = zeros
    feature_dims = {m: dims[m].shape[2] for m in MODALITIES}
    for s in SPLITS:
        for m in MODALITIES:
            if m not in frames[s]:  # no file in this split: absent, never zeros
                empty = np.zeros((0, feature_dims[m]), np.float32)
                frames[s][m] = [empty] * counts[s]
                present[s][m] = np.zeros(counts[s], bool)

    lo, hi = label_range_of(labels, label_range)
    for s in SPLITS:
        i = first_outside(labels[s], lo, hi)  # the stored float32 value must be in range
        if i is not None:
            p = probes[s]["label"]
            raise DataError(
                f"{p.path}: dataset {p.dataset!r}, row {i} (id '{s}-{i:05d}'): label "
                f"{float(labels[s][i])} outside the label range [{lo}, {hi}]"
            )

    splits = {
        s: SplitArrays(
            ids=[f"{s}-{i:05d}" for i in range(counts[s])],
            labels=labels[s].astype(np.float32),
            frames=frames[s],
            present=present[s],
        )
        for s in SPLITS
    }
    source = f"mfn:{folder}"
    meta = DatasetMeta(
        name=name or folder, dims=feature_dims, label_range=(float(lo), float(hi)), source=source
    )
    write_dataset(out, splits, meta)
    summary = MFNImportSummary.of(out, source, meta.digest, splits, sanitized)
    summary.all_zero = all_zero
    for s in SPLITS:
        for m in MODALITIES:
            if m not in feature_files[s]:
                summary.notes.append(f"split {s!r}: no {m} file; {m} absent for all samples")
            elif all_zero[s][m]:
                summary.notes.append(
                    f"split {s!r}: {all_zero[s][m]} samples with only all-zero {m} frames "
                    f"made {m}-absent"
                )
    if unused:
        summary.notes.append(f"ignored files: {', '.join(unused)}")
    return summary
