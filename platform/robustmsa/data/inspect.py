"""What a dataset directory holds: the numbers behind ``robustmsa data inspect DIR``.

`inspect_dataset` opens the dataset (so a corrupt one raises the reader's `DataError`) and
returns plain JSON-able numbers; `format_inspection` renders them as a readable report.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import ParquetSplit, open_dataset
from robustmsa.data.schema import SPLITS


def label_bins(lo: float, hi: float) -> list[tuple[float, float]]:
    """Bins of width 1 from ``lo`` covering ``[lo, hi]``; the last one ends at ``hi``."""
    n = max(1, math.ceil(hi - lo))
    edges = [lo + k for k in range(n)] + [hi]
    return list(itertools.pairwise(edges))


def _split_info(split: ParquetSplit, lo: float, hi: float) -> dict[str, Any]:
    n = len(split)
    info: dict[str, Any] = {"count": n, "frames": {}, "lengths": {}, "presence": {}}
    info["nonfinite"] = {}
    for m in MODALITIES:
        store = split.frames[m]
        lengths = np.diff(store.offsets)
        present = split._present[m].numpy()
        info["frames"][m] = int(lengths.sum())
        info["presence"][m] = float(present.mean()) if n else 0.0
        # Sequence lengths of the samples that have the modality (absent ones have 0 frames).
        have = lengths[present]
        info["lengths"][m] = (
            {"min": int(have.min()), "mean": float(have.mean()), "max": int(have.max())}
            if len(have)
            else {"min": None, "mean": None, "max": None}
        )
        used = store.frames  # standardised: NaN and inf stay NaN and inf
        info["nonfinite"][m] = {
            "nan": int(np.isnan(used).sum()),
            "inf": int(np.isinf(used).sum()),
        }
    y = split.labels.numpy().astype(np.float64)
    bins = label_bins(lo, hi)
    k = np.clip(np.floor(y - lo).astype(np.int64), 0, len(bins) - 1)
    counts = np.bincount(k, minlength=len(bins))
    info["labels"] = {
        "min": float(y.min()),
        "mean": float(y.mean()),
        "max": float(y.max()),
        "zeros": int((y == 0).sum()),
        "nonfinite": int((~np.isfinite(y)).sum()),
        "histogram": [
            {"lo": float(a), "hi": float(b), "count": int(c)}
            for (a, b), c in zip(bins, counts, strict=True)
        ],
    }
    return info


def inspect_dataset(path: str | Path) -> dict[str, Any]:
    """The numbers of the dataset directory ``path`` (validated on open).

    Keys: ``path``, ``name``, ``source``, ``digest``, ``dims`` (per modality),
    ``label_range`` ``[lo, hi]``, ``optional_columns``, ``total`` (samples in all splits) and
    ``splits``: per split ``count``; per modality ``frames`` (total), ``presence`` (fraction of
    samples with the modality), ``lengths`` (``min``/``mean``/``max`` frames over the samples
    that have it; None when none has), ``nonfinite`` (``nan``/``inf`` counts of feature values;
    0 in a valid file); ``labels``: ``min``/``mean``/``max``, ``zeros`` (labels exactly 0),
    ``nonfinite`` and ``histogram`` (bins of width 1 from ``lo``, ``[a, b)`` except the last,
    ``[a, hi]``, each ``{"lo", "hi", "count"}``).
    """
    root = Path(path)
    splits = open_dataset(root)
    meta = splits[SPLITS[0]].meta
    lo, hi = (float(v) for v in meta.label_range)
    per_split = {name: _split_info(splits[name], lo, hi) for name in SPLITS}
    return {
        "path": str(root),
        "name": meta.name,
        "source": meta.source,
        "digest": meta.digest,
        "dims": {m: int(meta.dims[m]) for m in MODALITIES},
        "label_range": [lo, hi],
        "optional_columns": list(meta.optional_columns),
        "total": sum(s["count"] for s in per_split.values()),
        "splits": per_split,
    }


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_inspection(info: dict[str, Any]) -> str:
    """A readable multi-line report of `inspect_dataset`'s ``info``."""
    lo, hi = info["label_range"]
    dims = ", ".join(f"{m} {d}" for m, d in info["dims"].items())
    lines = [
        f"dataset   {info['name']}",
        f"path      {info['path']}",
        f"source    {info['source']}",
        f"digest    {info['digest']}",
        f"dims      {dims}",
        f"labels    range [{lo:g}, {hi:g}]",
        f"optional  {', '.join(info['optional_columns']) or 'none'}",
        "samples   "
        + ", ".join(f"{n} {s['count']}" for n, s in info["splits"].items())
        + f" (total {info['total']})",
    ]
    for name, s in info["splits"].items():
        lines += ["", f"{name}: {s['count']} samples"]
        header = f"  {'modality':<8} {'present':>8} {'len min':>8} {'len mean':>9} {'len max':>8}"
        lines.append(header + f" {'frames':>9} {'nan':>5} {'inf':>5}")
        for m, rate in s["presence"].items():
            ln, bad = s["lengths"][m], s["nonfinite"][m]
            lines.append(
                f"  {m:<8} {100 * rate:>7.1f}% {_num(ln['min'], 0):>8} {_num(ln['mean']):>9} "
                f"{_num(ln['max'], 0):>8} {s['frames'][m]:>9} {bad['nan']:>5} {bad['inf']:>5}"
            )
        lab = s["labels"]
        zero_pct = 100 * lab["zeros"] / max(s["count"], 1)
        lines.append(
            f"  labels   min {lab['min']:.3f}  mean {lab['mean']:.3f}  max {lab['max']:.3f}  "
            f"exact zeros {lab['zeros']} ({zero_pct:.1f}%)  non-finite {lab['nonfinite']}"
        )
        peak = max((b["count"] for b in lab["histogram"]), default=0)
        hist = lab["histogram"]
        for k, b in enumerate(hist):
            close = "]" if k == len(hist) - 1 else ")"
            span = f"[{b['lo']:g}, {b['hi']:g}{close}"
            bar = "#" * (round(30 * b["count"] / peak) if peak else 0)
            lines.append(f"    {span:<14} {b['count']:>7}  {bar}")
    return "\n".join(lines)
