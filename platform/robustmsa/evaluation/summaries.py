"""Robustness summaries of a long-form spectrum table, and the search objective.

A table is rows (a list of dicts, or the DataFrame of `evaluate_spectrum`) with the fields
``protocol, modalities, level, metric, value`` (see `robustmsa.evaluation.spectrum`). A *curve*
is the rows of one ``(protocol, modalities, metric)`` ordered by level; the point-set protocols
(``patterns``, ``random``: `POINT_SET_PROTOCOLS`) are sets of single points instead.

`summarize` gives, every key under ``robust/``:

- per curve of 2+ levels (``missing``, ``noise``, ``joint`` scopes; ``grid`` rows):

  - ``<protocol>/<modalities>/auilc_<metric>``: EMT-DLFR's AUILC (docs/references.md),
    ``sum((m[i] + m[i+1]) / 2 * step)`` over consecutive levels, not divided by the range width:
    `metrics.auilc` with the curve's step (0.1 on the default levels 0.0..1.0, so exactly as
    EMT-DLFR codes it); unevenly spaced levels use each gap as its own step;
  - ``.../mean_<metric>``: the AUILC divided by the range width (last level - first level),
    the trapezoid mean over the curve, comparable across ranges;
  - ``.../ratemean_<metric>``: LNLN's summary, the arithmetic mean over the levels below 1.0
    (0.0..0.9 on the default levels);
  - ``.../worst_<metric>``: the worst level's value: the maximum for error metrics
    (`metrics.LOWER_IS_BETTER`, i.e. MAE), the minimum for the others;

- per point-set protocol: ``<protocol>/mean_<metric>`` and ``<protocol>/worst_<metric>``, the
  arithmetic mean and the worst value over its points.

`effective_robustness_summary` compares curves with a reference table (the late-fusion
baseline of the same study): ``<protocol>/<modalities>/effective_<metric>``. `spectrum_score`
is the search objective. A nan value (e.g. ``acc2_non0`` with every label 0) propagates.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from robustmsa.evaluation.metrics import (
    LOWER_IS_BETTER,
    auilc,
    effective_robustness,
    mean_over_curve,
)
from robustmsa.spectrum.protocols import LEVEL_DECIMALS, POINT_SET_PROTOCOLS

# A spectrum table: rows as mappings, or a pandas DataFrame (itself iterable; read through its
# ``to_dict("records")``).
Table = Iterable[Mapping]
Curve = tuple[tuple[float, ...], tuple[float, ...]]  # (levels ascending, values)


def _records(rows: Table) -> list[Mapping]:
    """``rows`` as a list of mappings; a DataFrame is read through ``to_dict("records")``."""
    to_dict = getattr(rows, "to_dict", None)
    records = to_dict("records") if callable(to_dict) else list(rows)
    for r in records:
        missing = {"protocol", "modalities", "level", "metric", "value"} - set(r)
        if missing:
            raise ValueError(f"spectrum row lacks fields {sorted(missing)}: {dict(r)!r}")
    return records


def _grouped(records: list[Mapping], metric: str) -> dict[tuple[str, str], Curve]:
    """``{(protocol, modalities): (levels, values)}`` for ``metric``, sorted by key and level.

    A repeated ``(protocol, modalities, level)`` raises ValueError: it would be ambiguous."""
    grouped: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    for r in records:
        if r["metric"] != metric:
            continue
        curve = grouped[(r["protocol"], r["modalities"])]
        level = float(r["level"])
        if level in curve:
            raise ValueError(
                f"spectrum table repeats protocol {r['protocol']!r}, modalities "
                f"{r['modalities']!r}, level {level}, metric {metric!r}"
            )
        curve[level] = float(r["value"])
    out = {}
    for key in sorted(grouped):
        levels = tuple(sorted(grouped[key]))
        out[key] = (levels, tuple(grouped[key][lv] for lv in levels))
    return out


def curves(rows: Table, metric: str) -> dict[tuple[str, str], list[float]]:
    """``{(protocol, modalities): [value at each level, in level order]}`` for ``metric``."""
    return {k: list(v) for k, (_, v) in _grouped(_records(rows), metric).items()}


def _metrics(records: list[Mapping]) -> list[str]:
    return sorted({r["metric"] for r in records})


def _gaps(levels: tuple[float, ...]) -> np.ndarray:
    # Rounded so that 0.3 - 0.2 (0.09999999999999998) is the 0.1 step it stands for.
    return np.round(np.diff(np.asarray(levels, dtype=np.float64)), LEVEL_DECIMALS)


def curve_auilc(levels: tuple[float, ...], values: tuple[float, ...]) -> float:
    """EMT-DLFR's AUILC of one curve of 2+ levels: `metrics.auilc` with the curve's step when
    the levels are equally spaced, else the trapezoid with each gap as its step."""
    gaps = _gaps(levels)
    if gaps.size == 0:
        raise ValueError("auilc needs a curve of at least 2 levels")
    if np.all(gaps == gaps[0]):
        return auilc(values, float(gaps[0]))
    m = np.asarray(values, dtype=np.float64)
    return float(np.sum((m[:-1] + m[1:]) / 2.0 * gaps))


def curve_mean(levels: tuple[float, ...], values: tuple[float, ...]) -> float:
    """Width-normalised AUILC (`metrics.mean_over_curve` on equal steps); a single level's
    value is returned unchanged."""
    if len(values) == 1:
        return float(values[0])
    gaps = _gaps(levels)
    if np.all(gaps == gaps[0]):
        return mean_over_curve(values, float(gaps[0]))
    return curve_auilc(levels, values) / float(np.sum(gaps))


def worst(metric: str, values: Iterable[float]) -> float:
    """The worst of ``values`` for ``metric``: max for error metrics, min otherwise (nan
    propagates)."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"worst {metric!r}: no values")
    return float(np.max(arr) if metric in LOWER_IS_BETTER else np.min(arr))


def _ratemean(levels: tuple[float, ...], values: tuple[float, ...]) -> float:
    below = [v for lv, v in zip(levels, values, strict=True) if lv < 1.0]
    return float(np.mean(below))


def summarize(rows: Table) -> dict[str, float]:
    """Curve and point-set summaries of ``rows``; see the module docstring for the keys."""
    records = _records(rows)
    out: dict[str, float] = {}
    for metric in _metrics(records):
        sets: dict[str, list[float]] = defaultdict(list)
        for (protocol, mods), (levels, values) in _grouped(records, metric).items():
            if protocol in POINT_SET_PROTOCOLS:
                sets[protocol].extend(values)
                continue
            if len(levels) < 2:
                continue
            prefix = f"robust/{protocol}/{mods}"
            out[f"{prefix}/auilc_{metric}"] = curve_auilc(levels, values)
            out[f"{prefix}/mean_{metric}"] = curve_mean(levels, values)
            out[f"{prefix}/ratemean_{metric}"] = _ratemean(levels, values)
            out[f"{prefix}/worst_{metric}"] = worst(metric, values)
        for protocol, values in sets.items():
            out[f"robust/{protocol}/mean_{metric}"] = float(np.mean(values))
            out[f"robust/{protocol}/worst_{metric}"] = worst(metric, values)
    return out


def effective_robustness_summary(rows: Table, reference_rows: Table) -> dict[str, float]:
    """``robust/<protocol>/<modalities>/effective_<metric>`` for every curve (2+ levels, not a
    point set) present in both tables: MultiBench's ``sum_i (a_i - a_0) - sum_i (LF_i - LF_0)``
    (`metrics.effective_robustness`) with ``a`` this table's curve, ``LF`` the reference's
    (late fusion) and index 0 the lowest level (clean). Positive: the model loses less than
    the reference on a higher-is-better metric, but MORE on an error metric such as MAE.

    ValueError when a shared curve has different levels in the two tables."""
    records, reference = _records(rows), _records(reference_rows)
    out: dict[str, float] = {}
    for metric in sorted(set(_metrics(records)) & set(_metrics(reference))):
        ours, theirs = _grouped(records, metric), _grouped(reference, metric)
        for key in sorted(set(ours) & set(theirs)):
            protocol, mods = key
            (levels, values), (ref_levels, ref_values) = ours[key], theirs[key]
            if protocol in POINT_SET_PROTOCOLS or len(levels) < 2:
                continue
            if levels != ref_levels:
                raise ValueError(
                    f"effective robustness of {protocol}/{mods} {metric}: levels {list(levels)} "
                    f"differ from the reference's {list(ref_levels)}"
                )
            name = f"robust/{protocol}/{mods}/effective_{metric}"
            out[name] = effective_robustness(values, ref_values)
    return out


def spectrum_score(rows: Table) -> float:
    """The search objective (lower is better), defined here once.

    The mean absolute error averaged over the reliability spectrum, with every PROTOCOL
    weighted equally: within a protocol, each curve (``missing@text``, ...) or point
    (``patterns/text+audio``, ``random/draw0``, ``clean``) contributes its width-normalised
    AUILC of MAE (`curve_mean`: the trapezoid mean over its levels; a single point's value),
    and these are averaged; the score is the mean of the protocols' averages. So seven pattern
    points weigh as much as one ``missing`` protocol, and a protocol's scopes share its weight.
    Computed on the validation split only; the test split never reaches it. ValueError on a
    table without ``mae`` rows.
    """
    per_protocol: dict[str, list[float]] = defaultdict(list)
    for (protocol, _), (levels, values) in _grouped(_records(rows), "mae").items():
        per_protocol[protocol].append(curve_mean(levels, values))
    if not per_protocol:
        raise ValueError("spectrum_score: the table has no 'mae' rows")
    means = [math.fsum(v) / len(v) for _, v in sorted(per_protocol.items())]
    return float(math.fsum(means) / len(means))
