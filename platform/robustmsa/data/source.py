"""Resolve a study's data section to a dataset directory on this node (``data.path`` may be a
URI of any pyarrow filesystem, staged per node by `robustmsa.data.remote`)."""

from __future__ import annotations

from pathlib import Path

from robustmsa.data.remote import is_uri, stage_dataset
from robustmsa.data.synthetic import ensure_synthetic
from robustmsa.errors import DataError


def dataset_dir(source: str, *, path: str | None, preset: str, seed: int, cache_dir: str) -> Path:
    """The dataset directory: ``path`` for Parquet (a URI: this node's staged copy under
    ``cache_dir``), else the synthetic cache (made on first use)."""
    if source == "parquet" and is_uri(path):
        return stage_dataset(path, cache_dir)
    if source == "parquet":
        root = Path(path or "")
        if not root.is_dir():
            raise DataError(f"data.path: dataset directory {str(root)!r} not found")
        return root
    return ensure_synthetic(preset, cache_dir, seed)
