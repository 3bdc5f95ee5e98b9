"""A split's frames, standardised once into ``.npy`` files that every later open memory-maps.

Why: Parquet pages are compressed and decoded into memory, so reading a split's frame columns
costs its whole decoded size in RAM on every open (12 GiB for MOSEI, see
``benchmarks/README.md``), and each batch would standardise its frames again. The cache holds,
per modality, the split's frames standardised with the train-split statistics, back to back,
followed by one zero row (``values`` float32 ``(F + 1, d)``), and the row offsets
(``offsets`` int64 ``(N + 1,)``). ``np.load(mmap_mode="r")`` maps them without reading: pages
come from the OS page cache as batches touch them, and a padded batch is one gather whose
padding positions point at the zero row.

The cache is built by streaming the Parquet file in chunks of rows (``chunk_rows``), each chunk
validated (`robustmsa.data.validate.validate_frames`: messages name the split row) before it is
written, so building needs memory for one chunk, not the split. A cache directory belongs to
one file path; its ``manifest.json`` records the file's size, modification time and dataset
digest, and any mismatch (the file was rewritten) rebuilds it. Builds go to a temporary
directory renamed into place, so a failed build leaves nothing; a lock file per cache lets one
process build while concurrent openers (two DDP ranks, two trials) wait and then map it.

Location: ``$ROBUSTMSA_FRAME_CACHE`` or ``~/.cache/robustmsa/frames`` unless the caller names a
directory (the training loop uses ``<data.cache_dir>/frames``). Every build first removes the
caches of Parquet files that no longer exist (`prune_orphans`). A build shows a progress bar
when stderr is a terminal (`progress_bar`, also used by the dataset generator and the spectrum
evaluator).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from robustmsa.data.batch import MODALITIES
from robustmsa.data.schema import DatasetMeta
from robustmsa.data.validate import validate_frames
from robustmsa.errors import DataError

CACHE_VERSION = 1
CHUNK_ROWS = 512
ENV_VAR = "ROBUSTMSA_FRAME_CACHE"


class ProgressBar:
    """A progress bar on stderr, or nothing (`progress_bar`): ``update``, ``close``, and a
    context manager that closes it."""

    def __init__(self, bar=None):
        self._bar = bar

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _in_ray_worker() -> bool:
    """Whether this process is a Ray task or actor worker (never imports Ray itself)."""
    ray = sys.modules.get("ray")
    try:
        return (
            ray is not None
            and ray.is_initialized()
            and (ray._private.worker.global_worker.mode == ray.WORKER_MODE)
        )
    except AttributeError:
        return False


def progress_bar(
    total: int, desc: str, enabled: bool | str | None = None, *, unit: str = "it"
) -> ProgressBar:
    """A bar over ``total`` steps of a long single step (a dataset's generation, a frame-cache
    build, a spectrum evaluation over many points), the library the importers use (tqdm).

    ``enabled``: False, none; None (auto), a bar on stderr only when stderr is a terminal (so
    none in Ray workers, whose stderr is a log file, nor in tests and piped logs); True or a
    label (which replaces ``desc``), a bar: in a Ray worker Ray's ``tqdm_ray`` (drawn by the
    driver, which receives the worker's output through ``log_to_driver``), elsewhere tqdm on
    stderr, cleared when done.
    """
    if enabled is None:
        enabled = sys.stderr is not None and sys.stderr.isatty()
    if not enabled:
        return ProgressBar()
    if isinstance(enabled, str):
        desc = enabled
    if _in_ray_worker():
        from ray.experimental.tqdm_ray import tqdm as ray_tqdm

        return ProgressBar(ray_tqdm(total=total, desc=desc, unit=unit))
    from tqdm import tqdm

    return ProgressBar(
        tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
    )


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = (x - mean) / std`` as every reader computes it (float32, multiplying by the
    float32 rounding of ``1 / std``), so cached and streamed frames are bit-identical."""
    inv_std = (1.0 / np.asarray(std, np.float64)).astype(np.float32)
    np.subtract(x, np.asarray(mean, np.float32), out=out)
    np.multiply(out, inv_std, out=out)


# Where a build runs out of room: a full disk, a file-size limit, a quota.
NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def frame_cache_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$ROBUSTMSA_FRAME_CACHE``, else ``~/.cache/robustmsa/frames``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(ENV_VAR, "~/.cache/robustmsa/frames")).expanduser()


def _identity(path: Path, meta: DatasetMeta) -> dict:
    st = path.stat()
    return {
        "version": CACHE_VERSION,
        "file": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "digest": meta.digest,
        "dims": dict(meta.dims),
    }


def cache_dir_for(path: Path, root: Path) -> Path:
    """The cache directory of the Parquet file ``path`` under ``root`` (one per file path)."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return root / f"{path.stem}-{key}"


def _load(target: Path, identity: dict, rows: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The mapped arrays of a complete, current cache at ``target``; {} when it is absent,
    stale or malformed (the caller rebuilds)."""
    try:
        if json.loads((target / "manifest.json").read_text()) != identity:
            return {}
        out = {}
        for m in MODALITIES:
            values = np.load(target / f"{m}.values.npy", mmap_mode="r", allow_pickle=False)
            offsets = np.load(target / f"{m}.offsets.npy", allow_pickle=False)
            ok = (
                values.dtype == np.float32
                and values.shape == (int(offsets[-1]) + 1, identity["dims"][m])
                and offsets.shape == (rows + 1,)
            )
            if not ok:
                return {}
            out[m] = (values, offsets)
        return out
    except (OSError, ValueError, KeyError, IndexError):
        return {}


def _build(
    path: Path,
    tmp: Path,
    meta: DatasetMeta,
    lengths: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    ids: list[str],
    chunk_rows: int,
    bar: ProgressBar,
    digest=None,
) -> None:
    """Stream every frame of ``path`` into the cache at ``tmp``, validated and standardised;
    ``digest``: a sha256 object that every raw frame is fed to, in row order per modality
    (`robustmsa.data.content_digest`)."""
    parquet = pq.ParquetFile(path, memory_map=True)
    for m in MODALITIES:
        d = meta.dims[m]
        offsets = np.concatenate([[0], np.cumsum(lengths[m], dtype=np.int64)])
        mean, std = meta.feature_mean[m], meta.feature_std[m]
        values = np.lib.format.open_memmap(
            tmp / f"{m}.values.npy", mode="w+", dtype=np.float32, shape=(int(offsets[-1]) + 1, d)
        )
        row0 = 0
        for chunk in parquet.iter_batches(batch_size=chunk_rows, columns=[m]):
            col = chunk.column(0)
            r1 = row0 + len(col)
            validate_frames(path, m, col, lengths[m][row0:r1], present[m][row0:r1], meta, ids, row0)
            first, last = col.offsets[0].as_py(), col.offsets[len(col)].as_py()
            x = col.values.flatten().to_numpy()[first * d : last * d].reshape(-1, d)
            if digest is not None:
                digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
            standardise(x, mean, std, values[offsets[row0] : offsets[r1]])
            row0 = r1
            bar.update()
        values[-1] = 0.0  # the padding row
        values.flush()
        del values
        np.save(tmp / f"{m}.offsets.npy", offsets, allow_pickle=False)


def prune_orphans(root: Path) -> list[Path]:
    """Remove the caches under ``root`` whose Parquet file no longer exists (a deleted or moved
    dataset); returns what was removed. Builds in progress (hidden directories) are left."""
    removed = []
    for entry in root.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            source = Path(json.loads((entry / "manifest.json").read_text())["file"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a cache of ours, or one being replaced: not ours to judge
        if not source.exists():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def load_frames(
    path: Path,
    meta: DatasetMeta,
    lengths: dict[str, np.ndarray],
    present: dict[str, np.ndarray],
    ids: list[str],
    root: Path,
    chunk_rows: int | None = None,
    progress: bool | None = None,
    content=None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality ``(values (F + 1, d) mapped read-only, offsets (N + 1,))`` of the split
    file ``path``, building (and validating) the cache first when it is absent or stale.

    ``lengths``/``present`` are the split's validated ``m_length``/``m_present`` columns and
    ``ids`` its ids (they name rows in error messages); ``chunk_rows`` rows are streamed at a
    time (default `CHUNK_ROWS`). ``progress``: a bar over the chunks of a build (`progress_bar`;
    None: only on a terminal). ``content``: ``(sha256 fed with the split's rows, the content
    digest recorded for it)``: a build feeds it the frames and refuses a file whose content
    differs (`DataError`, nothing cached); None: no check.
    """
    identity = _identity(path, meta)
    target = cache_dir_for(path, root)
    found = _load(target, identity, len(ids))
    if found:
        return found
    root.mkdir(parents=True, exist_ok=True)
    # One builder per cache at a time (two DDP ranks, two trials): the others wait, then map
    # what it built. Without the lock, a builder could move a fresh cache aside as stale.
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _load(target, identity, len(ids))
        if found:
            return found
        prune_orphans(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
        chunk_rows = chunk_rows or CHUNK_ROWS
        chunks = len(MODALITIES) * -(-len(ids) // chunk_rows)
        desc = f"frame cache {path.parent.name}/{path.stem}"
        try:
            digest, expected = content if content is not None else (None, None)
            try:
                with progress_bar(chunks, desc, progress, unit="chunk") as bar:
                    _build(path, tmp, meta, lengths, present, ids, chunk_rows, bar, digest)
            except OSError as exc:
                if exc.errno not in NO_ROOM:
                    raise
                raise DataError(
                    f"{root}: no room for the frame cache of {path} ({exc.strerror}); free "
                    f"space there, or move the cache (data.cache_dir, ${ENV_VAR})"
                ) from exc
            if digest is not None and digest.hexdigest()[:16] != expected:
                raise DataError(
                    f"{path}: content differs from the digest {expected!r} recorded when the "
                    "dataset was written (the file was changed since); write the dataset anew"
                )
            (tmp / "manifest.json").write_text(json.dumps(identity))
            if target.exists():  # stale: move it aside (a directory rename cannot replace it)
                stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale.", dir=root))
                os.replace(target, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    found = _load(target, identity, len(ids))
    if not found:
        raise OSError(f"{target}: frame cache unreadable right after it was built")
    return found
