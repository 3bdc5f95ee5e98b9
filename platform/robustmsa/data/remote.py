"""Datasets and outputs named by URI: any ``pyarrow.fs`` filesystem (``s3://``, ``gs://``,
``hdfs://``, ``file://``), beside plain local paths.

A dataset URI on a remote filesystem is staged once per node: its three split files are copied
into ``<cache_dir>/remote/<name>-<key>/`` (written to a temporary directory, renamed into place,
one copier per node under a file lock), and every later open on that node memory-maps the local
copy, then builds the node-local frame cache from it (`robustmsa.data.frame_cache`). The copy
is kept while the remote files' sizes and modification times are unchanged. A ``file://`` URI
resolves through the same code to its local directory, which is read in place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from robustmsa.data.schema import SPLITS
from robustmsa.errors import DataError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
COPY_BLOCK = 8 << 20


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def is_uri(text: str | None) -> bool:
    """True for ``scheme://...`` (``file://`` included), False for a plain path or None."""
    return bool(text) and _SCHEME.match(text) is not None


def filesystem(uri: str, field: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` of ``uri``; `DataError` naming ``field`` when no
    installed pyarrow filesystem serves its scheme or the URI is malformed."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
        scheme = _SCHEME.match(uri)
        why = _one_line(exc)
        raise DataError(
            f"{field}: {uri}: no usable pyarrow filesystem for scheme "
            f"{scheme.group(1) if scheme else '?'!r} ({why})"
        ) from exc


def _remote_identity(fs: pafs.FileSystem, root: str, uri: str) -> dict:
    infos = fs.get_file_info([f"{root.rstrip('/')}/{s}.parquet" for s in SPLITS])
    files = {}
    for split, info in zip(SPLITS, infos, strict=True):
        if info.type != pafs.FileType.File:
            raise DataError(f"data.path: {uri}: split file {split}.parquet not found")
        files[split] = [info.size, info.mtime_ns]
    return {"uri": uri, "files": files}


def _read_manifest(target: Path) -> dict | None:
    try:
        return json.loads((target / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def stage_dataset(uri: str, cache_dir: str | Path) -> Path:
    """The local directory of the dataset at ``uri`` (module docstring): the directory itself
    for a local filesystem, else this node's staged copy, copied first when absent or stale."""
    fs, root = filesystem(uri, "data.path")
    if isinstance(fs, pafs.LocalFileSystem):
        local = Path(root)
        if not local.is_dir():
            raise DataError(f"data.path: dataset directory {uri!r} not found")
        return local
    try:
        identity = _remote_identity(fs, root, uri)
    except OSError as exc:
        raise DataError(f"data.path: {uri}: unreadable ({_one_line(exc)})") from exc
    key = hashlib.sha256(uri.encode()).hexdigest()[:12]
    base = Path(cache_dir) / "remote"
    target = base / f"{Path(root.rstrip('/')).name or 'dataset'}-{key}"
    if _read_manifest(target) == identity:
        return target
    base.mkdir(parents=True, exist_ok=True)
    # One copier per node (two trials, two DDP ranks): the others wait, then use its copy.
    with open(base / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _read_manifest(target) == identity:
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=base))
        try:
            for split in SPLITS:
                source = f"{root.rstrip('/')}/{split}.parquet"
                local = tmp / f"{split}.parquet"
                with fs.open_input_stream(source) as src, open(local, "wb") as dst:
                    shutil.copyfileobj(src, dst, COPY_BLOCK)
            (tmp / "manifest.json").write_text(json.dumps(identity))
            if target.exists():  # stale: the remote files changed
                stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale.", dir=base))
                os.replace(target, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(tmp, target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataError(f"data.path: {uri}: copy failed ({_one_line(exc)})") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def check_storage(uri_or_path: str) -> None:
    """Fail before a study starts when ``study.storage_path`` names a filesystem that is not
    installed or cannot be written (`DataError` naming the key and the URI)."""
    if not is_uri(uri_or_path):
        return
    fs, path = filesystem(uri_or_path, "study.storage_path")
    try:
        fs.create_dir(path, recursive=True)
    except OSError as exc:
        raise DataError(
            f"study.storage_path: {uri_or_path}: not writable ({_one_line(exc)})"
        ) from exc
