"""CMU-MultimodalSDK computational sequences (``.csd``) to Parquet, word-aligned.

A ``.csd`` file is HDF5 with one root group named after the sequence, holding
``data/<video_id>/features`` ``(m, d)`` and ``data/<video_id>/intervals`` ``(m, 2)`` (start and
end, seconds) and ``metadata/<key>`` (JSON strings; not read). Inputs:

- ``sources``: our modality name (``text``, ``audio``, ``vision``) -> ``.csd`` file; all three
  are required (a modality without a file has no known feature dim);
- ``labels``: a ``.csd`` whose features are labels per interval (segment); the first column is
  the label (e.g. sentiment in the SDK's MOSEI ``All Labels``, ``(m, 7)``);
- ``folds``: a JSON file ``{"train": [ids], "valid": [ids], "test": [ids]}`` (exactly these
  keys; each a non-empty list of distinct video-id strings; the three lists disjoint; every id
  must be in the labels file and in the reference modality's file).

Rules (decided here):

- **One sample per video** of the folds, id = the video id, label = the mean of the first label
  column over the video's label intervals (the SDK's segment labels averaged to the video).
- **Steps**: the intervals of the ``reference`` modality (default ``text``: words) define the
  steps, in file order; the reference keeps its own frames, one per step.
- **Alignment** of every other modality: for each step, the plain (unweighted) mean of the
  features of the frames whose interval overlaps the step's interval by more than
  ``EPSILON`` seconds (``min(ends) - max(starts) > EPSILON``, as the SDK's ``align`` decides an
  intersection, and the SDK's default collapse, an average). A step that no frame overlaps is
  *invalid* for that modality and is dropped from its sequence (no zero frames are invented),
  so an aligned modality can have fewer frames than the reference; the summary counts them.
- **Absence**: a video missing from a modality's file, or with no frame overlapping any step,
  has that modality absent (``present = false``). A video missing from the *reference* file
  is an error (there are no steps to align to); so is one missing from the labels file.
- **Values**: non-finite feature values (NaN, +-inf) are set to 0 before averaging and counted
  once per source value in ``sanitized``; averages are computed in float64, stored as float32.
  Non-finite intervals or labels are errors.
- **Label range**: ``label_range`` when given (labels outside it are refused), else
  ``(floor(min), ceil(max))`` over all splits (``(lo, lo + 1)`` if that is empty).
- ``name`` defaults to the name of the folder holding the labels file; the source string is
  ``"csd:text=<file>,audio=<file>,vision=<file>,labels=<file>"`` (file names only).

Errors are `DataError`s naming the file, the video id and the field.
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustmsa.data.batch import MODALITIES
from robustmsa.data.importers.labels import first_outside, label_range_of
from robustmsa.data.importers.summary import ImportSummary, progress
from robustmsa.data.parquet import SplitArrays, write_dataset
from robustmsa.data.schema import SPLITS, DatasetMeta
from robustmsa.errors import DataError

EPSILON = 1e-5  # seconds; an overlap must be longer than this (the SDK's default epsilon)
_DENSE_CELLS = 1 << 22  # steps x frames per chunk of the general (unsorted) alignment


@dataclass
class CSDImportSummary(ImportSummary):
    """`ImportSummary` plus, per modality, the videos missing from its file, the reference
    steps dropped for lack of an overlapping frame, and notes."""

    missing: dict[str, int] = field(default_factory=dict)
    dropped_steps: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        return "\n".join([super().format(), *(f"  note: {n}" for n in self.notes)])


class _Sequence:
    """One open computational sequence: ``data/<video_id>/{features,intervals}``."""

    def __init__(self, path: Path, role: str, stack: ExitStack):
        import h5py  # imported lazily: only the HDF5 importers need it

        self.path, self.role = path, role
        if not path.is_file():
            raise DataError(f"{path}: {role} .csd file not found")
        try:
            f = stack.enter_context(h5py.File(path, "r"))
        except OSError as exc:
            raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc
        roots = sorted(f.keys())
        if len(roots) != 1 or not isinstance(f[roots[0]], h5py.Group):
            raise DataError(
                f"{path}: expected one root group named after the sequence, found {roots}"
            )
        root = f[roots[0]]
        if "data" not in root or not isinstance(root["data"], h5py.Group):
            raise DataError(
                f"{path}: group {roots[0]!r} has no 'data' group (found {sorted(root.keys())})"
            )
        self.data = root["data"]
        self._h5py = h5py

    def has(self, vid: str) -> bool:
        return vid in self.data

    def _where(self, vid: str, name: str | None = None) -> str:
        where = f"{self.path}: video {vid!r}"
        return where if name is None else f"{where}, field {name!r}"

    def _dataset(self, vid: str, name: str):
        group = self.data[vid]
        if not isinstance(group, self._h5py.Group):
            raise DataError(f"{self._where(vid)}: expected a group, found a dataset")
        if name not in group or not isinstance(group[name], self._h5py.Dataset):
            raise DataError(
                f"{self._where(vid, name)}: no {name!r} dataset (found {sorted(group.keys())})"
            )
        ds = group[name]
        if ds.dtype.kind not in "fiub":
            raise DataError(
                f"{self._where(vid, name)}: expected numbers, got dtype {ds.dtype} (a words "
                "sequence? use an embedding sequence)"
            )
        return ds

    def feature_dim(self) -> int:
        """The feature dim, from the first video of the file."""
        vids = sorted(self.data.keys())
        if not vids:
            raise DataError(f"{self.path}: no videos under 'data'")
        shape = self._dataset(vids[0], "features").shape
        return int(shape[1]) if len(shape) == 2 else 1

    def read(self, vid: str, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Float64 features ``(m, d)`` (``d == dim`` when given) and intervals ``(m, 2)``."""
        x = np.asarray(self._dataset(vid, "features")[()], dtype=np.float64)
        iv = np.asarray(self._dataset(vid, "intervals")[()], dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise DataError(f"{self._where(vid, 'features')}: expected (m, d), got {x.shape}")
        if dim is not None and x.shape[1] != dim:
            raise DataError(
                f"{self._where(vid, 'features')}: {x.shape[1]} features per frame, expected "
                f"{dim} (as the file's first video)"
            )
        if iv.ndim != 2 or iv.shape[1] != 2:
            raise DataError(f"{self._where(vid, 'intervals')}: expected (m, 2), got {iv.shape}")
        if len(iv) != len(x):
            raise DataError(
                f"{self._where(vid, 'intervals')}: {len(iv)} intervals but {len(x)} feature rows"
            )
        bad = ~np.isfinite(iv)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise DataError(f"{self._where(vid, 'intervals')}, row {i}: non-finite interval")
        back = iv[:, 1] < iv[:, 0]
        if back.any():
            i = int(np.argmax(back))
            raise DataError(
                f"{self._where(vid, 'intervals')}, row {i}: end {iv[i, 1]} before start {iv[i, 0]}"
            )
        return x, iv


def align(ref: np.ndarray, iv: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ``x`` (frames with intervals ``iv``) over each reference interval of ``ref``.

    Returns the float64 means of the steps that at least one frame overlaps (by more than
    `EPSILON`), in step order, and the bool mask of those steps over ``ref``.
    """
    k, d = len(ref), x.shape[1]
    sums = np.zeros((k, d), np.float64)
    counts = np.zeros(k, np.int64)
    long = iv[:, 1] - iv[:, 0] > EPSILON  # a frame this short overlaps nothing
    iv, x = iv[long], x[long]
    if k and len(iv):
        order = np.argsort(iv[:, 0], kind="stable")
        iv, x = iv[order], x[order]
        s, e = ref[:, 0], ref[:, 1]
        if (np.diff(iv[:, 1]) >= 0).all():
            # Starts and ends both sorted: the overlapping frames of a step are contiguous.
            lo = np.searchsorted(iv[:, 1], s + EPSILON, side="right")
            hi = np.searchsorted(iv[:, 0], e - EPSILON, side="left")
            counts = np.maximum(hi - lo, 0)
            counts[e - s <= EPSILON] = 0
            hit = counts > 0
            if hit.any():
                padded = np.vstack([x, np.zeros((1, d))])
                bounds = np.stack([lo[hit], hi[hit]], axis=1).reshape(-1)
                sums[hit] = np.add.reduceat(padded, bounds, axis=0)[::2]
        else:
            chunk = max(1, _DENSE_CELLS // len(iv))
            for a in range(0, k, chunk):
                b = min(k, a + chunk)
                ends = np.minimum(e[a:b, None], iv[None, :, 1])
                starts = np.maximum(s[a:b, None], iv[None, :, 0])
                overlap = (ends - starts) > EPSILON
                counts[a:b] = overlap.sum(axis=1)
                sums[a:b] = overlap.astype(np.float64) @ x
    hit = counts > 0
    return sums[hit] / counts[hit, None], hit


def _sanitize(x: np.ndarray) -> tuple[np.ndarray, int]:
    bad = ~np.isfinite(x)
    if bad.any():
        x = x.copy()
        x[bad] = 0.0
    return x, int(bad.sum())


def _load_folds(folds: Path) -> dict[str, list[str]]:
    if not folds.is_file():
        raise DataError(f"{folds}: folds file not found")
    try:
        raw = json.loads(folds.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{folds}: not a readable JSON file ({exc})") from exc
    if not isinstance(raw, dict):
        raise DataError(f"{folds}: expected an object {{train|valid|test: [video ids]}}")
    unknown = sorted(str(k) for k in raw if k not in SPLITS)
    missing = [s for s in SPLITS if s not in raw]
    if unknown or missing:
        raise DataError(
            f"{folds}: expected keys {list(SPLITS)}; missing {missing}, unknown {unknown}"
        )
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for s in SPLITS:
        ids = raw[s]
        if not isinstance(ids, list) or not ids:
            raise DataError(f"{folds}: split {s!r}: expected a non-empty list of video ids")
        for i, vid in enumerate(ids):
            if not isinstance(vid, str) or not vid:
                raise DataError(
                    f"{folds}: split {s!r}, entry {i}: video id must be a non-empty string, "
                    f"got {vid!r}"
                )
            if vid in seen:
                other = seen[vid]
                what = "listed twice" if other == s else f"also in split {other!r}"
                raise DataError(f"{folds}: split {s!r}: video {vid!r} {what} (folds overlap)")
            seen[vid] = s
        out[s] = list(ids)
    return out


def import_csd(
    sources: dict[str, Path],
    labels: Path,
    folds: Path,
    out: Path,
    *,
    reference: str = "text",
    name: str | None = None,
    label_range: tuple[float, float] | None = None,
    show_progress: bool = True,
) -> CSDImportSummary:
    """Import CMU-MultimodalSDK sequences to the new dataset directory ``out``, aligned to the
    intervals of the ``reference`` modality. Inputs and rules: the module docstring. Raises
    `DataError` naming the file and video id on bad input; nothing is written then."""
    sources = {m: Path(p) for m, p in sources.items()}
    labels, folds, out = Path(labels), Path(folds), Path(out)
    unknown = sorted(m for m in sources if m not in MODALITIES)
    if unknown:
        raise DataError(f"sources: unknown modality {unknown} (known: {list(MODALITIES)})")
    for m in MODALITIES:
        if m not in sources:
            raise DataError(
                f"sources: modality {m!r} has no .csd file; its feature dim cannot be known"
            )
    if reference not in MODALITIES:
        raise DataError(f"reference: unknown modality {reference!r} (known: {list(MODALITIES)})")
    if out.exists():
        raise DataError(f"{out}: output directory already exists; remove it or choose another")
    if label_range is not None:
        lo, hi = (float(v) for v in label_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise DataError(f"{labels}: label range {tuple(label_range)} is empty (need lo < hi)")
    fold_ids = _load_folds(folds)

    with ExitStack() as stack:
        seqs = {m: _Sequence(sources[m], f"{m}", stack) for m in MODALITIES}
        lab = _Sequence(labels, "labels", stack)
        for s in SPLITS:
            for vid in fold_ids[s]:
                if not lab.has(vid):
                    raise DataError(
                        f"{folds}: split {s!r}: video {vid!r} not found in the labels file {labels}"
                    )
                if not seqs[reference].has(vid):
                    raise DataError(
                        f"{sources[reference]}: video {vid!r} (folds split {s!r}) missing from "
                        f"the reference modality {reference!r}, whose intervals define the steps"
                    )
        dims = {m: seqs[m].feature_dim() for m in MODALITIES}

        sanitized = 0
        missing = dict.fromkeys(MODALITIES, 0)
        dropped = dict.fromkeys(MODALITIES, 0)
        emptied = dict.fromkeys(MODALITIES, 0)
        values: dict[str, list[float]] = {s: [] for s in SPLITS}
        frames = {s: {m: [] for m in MODALITIES} for s in SPLITS}
        jobs = [(s, vid) for s in SPLITS for vid in fold_ids[s]]
        desc = f"csd {labels.parent.name or labels.name}"
        for s, vid in progress(jobs, len(jobs), desc, show_progress):
            y, _ = lab.read(vid)
            if len(y) == 0:
                raise DataError(f"{labels}: video {vid!r}, field 'features': no label rows")
            bad = ~np.isfinite(y[:, 0])
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"{labels}: video {vid!r}, field 'features', row {i}: label {y[i, 0]} is "
                    "not finite"
                )
            values[s].append(float(y[:, 0].mean()))
            ref_x, ref_iv = seqs[reference].read(vid, dims[reference])
            ref_x, count = _sanitize(ref_x)
            sanitized += count
            for m in MODALITIES:
                if m == reference:
                    steps = ref_x
                elif not seqs[m].has(vid):
                    missing[m] += 1
                    steps = np.zeros((0, dims[m]))
                else:
                    x, iv = seqs[m].read(vid, dims[m])
                    x, count = _sanitize(x)
                    sanitized += count
                    steps, hit = align(ref_iv, iv, x)
                    dropped[m] += int((~hit).sum())
                    emptied[m] += int(len(steps) == 0)
                frames[s][m].append(steps.astype(np.float32))

    labels_by_split = {s: np.asarray(values[s], np.float64) for s in SPLITS}
    lo, hi = label_range_of(labels_by_split, label_range)
    for s in SPLITS:
        i = first_outside(labels_by_split[s], lo, hi)
        if i is not None:
            raise DataError(
                f"{labels}: video {fold_ids[s][i]!r} (split {s!r}): mean label "
                f"{labels_by_split[s][i]} outside the label range [{lo}, {hi}]"
            )

    splits = {
        s: SplitArrays(
            ids=list(fold_ids[s]),
            labels=labels_by_split[s].astype(np.float32),
            frames=frames[s],
            present={m: np.array([len(x) > 0 for x in frames[s][m]], bool) for m in MODALITIES},
        )
        for s in SPLITS
    }
    files = ",".join(f"{m}={sources[m].name}" for m in MODALITIES)
    source = f"csd:{files},labels={labels.name}"
    default_name = labels.resolve().parent.name or labels.stem
    meta = DatasetMeta(
        name=name or default_name, dims=dims, label_range=(float(lo), float(hi)), source=source
    )
    write_dataset(out, splits, meta)
    summary = CSDImportSummary.of(out, source, meta.digest, splits, sanitized)
    summary.missing, summary.dropped_steps = missing, dropped
    for m in MODALITIES:
        if missing[m]:
            summary.notes.append(f"{m}: {missing[m]} videos not in {sources[m].name}: absent")
        if dropped[m]:
            summary.notes.append(
                f"{m}: {dropped[m]} {reference} steps without an overlapping frame dropped"
                + (f"; {emptied[m]} videos left without frames: absent" if emptied[m] else "")
            )
    return summary
