"""Robustness summaries of a long-form spectrum table, and the search objective.

A *curve* is the rows of one ``(protocol, modalities, metric)`` ordered by level.
"""

from __future__ import annotations

from collections import defaultdict

from robustmsa.evaluation.metrics import auilc, mean_over_curve

LEVEL_STEP = 0.1


def curves(rows: list[dict], metric: str) -> dict[tuple[str, str], list[float]]:
    """``{(protocol, modalities): [value at each level, in level order]}`` for ``metric``."""
    grouped: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["metric"] == metric:
            grouped[(r["protocol"], r["modalities"])].append((r["level"], r["value"]))
    return {k: [v for _, v in sorted(pts)] for k, pts in grouped.items()}


def summarize(rows: list[dict]) -> dict[str, float]:
    """``robust/<protocol>/<modalities>/auilc_<metric>`` and ``.../mean_<metric>`` per curve of
    two or more levels (AUILC as EMT-DLFR codes it: trapezoid, step 0.1, not width-normalised).
    """
    out: dict[str, float] = {}
    for metric in sorted({r["metric"] for r in rows}):
        for (protocol, mods), values in curves(rows, metric).items():
            if len(values) < 2:
                continue
            out[f"robust/{protocol}/{mods}/auilc_{metric}"] = auilc(values, LEVEL_STEP)
            out[f"robust/{protocol}/{mods}/mean_{metric}"] = mean_over_curve(values, LEVEL_STEP)
    return out


def spectrum_score(rows: list[dict]) -> float:
    """The search objective (lower is better), defined here once.

    The mean absolute error averaged over the reliability spectrum: for every curve of the
    evaluated protocols (a single point, such as ``clean``, is a curve of one level), take the
    width-normalised AUILC of MAE (the trapezoid mean over its levels), then average the curves
    with equal weight. Computed on the validation split only; the test split never reaches it.
    """
    per_curve = [mean_over_curve(v, LEVEL_STEP) for v in curves(rows, "mae").values()]
    if not per_curve:
        raise ValueError("spectrum_score: the table has no 'mae' rows")
    return float(sum(per_curve) / len(per_curve))
