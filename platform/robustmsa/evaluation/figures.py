"""Reliability-curve, pattern and heat-map figures of a long-form spectrum table, as PNG files.

Input rows are the table of `robustmsa.evaluation.spectrum`: ``{"protocol", "modalities",
"level", "metric", "value", "n"}``. What is drawn:

- `curve_figures`: one PNG per curve protocol (``missing``, ``noise``, ``joint``), one line per
  ``modalities`` scope, x = level, y = the metric; the Bayes oracle's curve (``reference_rows``)
  dashed in the colour of the same scope; and a bar chart for ``patterns`` when present.
- `heatmap_figures`: one λ x η heat map per modality from the ``grid`` protocol, whose
  ``modalities`` is ``"<modality>/eta=<η>"`` and ``level`` is λ (`grid_matrix` builds the
  plotted array and is tested on its own).

Each PNG comes from a builder that returns the `Figure` unsaved (`curve_figure`,
`patterns_figure`, `heatmap_figure`), for a notebook to show. File names are deterministic:
``curves_<protocol>_<metric>.png``, ``patterns_<metric>.png``, ``heatmap_<modality>_<metric>.png``.
``<η>`` is `spectrum.protocols.format_level` (two decimals, more when needed).

Figures are `matplotlib.figure.Figure` objects with their own Agg canvas, never `pyplot`:
pyplot keeps a process-wide registry of open figures and a process-wide backend, so using it
here would change the backend of a notebook that imports this module and keep every figure of
a long study alive until closed. A figure made this way belongs to nothing but the function
that drew it; it is cleared after saving and freed when it goes out of scope.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CURVE_PROTOCOLS = ("missing", "noise", "joint")
PATTERNS = "patterns"
GRID = "grid"
ORACLE_LABEL = "Bayes oracle"
# On a metric without a per-sample Bayes decision (correlation, F1) the oracle's curve is what
# its predictions score, not a ceiling (`robustmsa.data.oracle.BOUNDED`).
ORACLE_PREDICTIONS_LABEL = "oracle predictions (not a bound)"


def oracle_label(metric: str) -> str:
    """The legend of the oracle's curve on ``metric``."""
    from robustmsa.data.oracle import BOUNDED

    return ORACLE_LABEL if metric in BOUNDED else ORACLE_PREDICTIONS_LABEL


X_LABELS = {
    "missing": "missing rate η",
    "noise": "noise level λ",
    "joint": "λ = η",
}
METRIC_LABELS = {
    "mae": "MAE (lower is better)",
    "corr": "Pearson r (higher is better)",
}
GRID_SCOPE = re.compile(r"(?P<modality>[^/]+)/eta=(?P<eta>\d+(?:\.\d+)?)")
# Parts of a file name (protocol, modality, metric): anything else could escape out_dir.
SAFE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
ANNOTATE_MAX_CELLS = 144  # a coarse grid gets its values written in the cells; a fine one not
DPI = 100


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _file_part(field: str, value: str) -> str:
    if not SAFE_NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{field} {value!r} cannot be part of a figure file name")
    return value


def _check_metric(rows: Sequence[dict], metric: str) -> None:
    """A metric the table does not have is a caller's typo, not an empty figure."""
    known = sorted({r["metric"] for r in rows})
    if rows and metric not in known:
        raise ValueError(f"metric {metric!r} is not in the spectrum table (has: {known})")


def curve_series(
    rows: Sequence[dict], protocol: str, metric: str
) -> dict[str, tuple[list[float], list[float]]]:
    """``{scope: (levels, values)}`` of ``protocol`` for ``metric``, levels ascending, scopes in
    order of first appearance. ValueError when a scope has a level twice."""
    grouped: dict[str, dict[float, float]] = defaultdict(dict)
    for r in rows:
        if r["protocol"] != protocol or r["metric"] != metric:
            continue
        points = grouped[r["modalities"]]
        level = float(r["level"])
        if level in points:
            raise ValueError(
                f"{protocol}/{r['modalities']}: level {level} appears twice for metric {metric!r}"
            )
        points[level] = float(r["value"])
    return {scope: (sorted(pts), [pts[lv] for lv in sorted(pts)]) for scope, pts in grouped.items()}


def grid_scope(modalities: str) -> tuple[str, float]:
    """``"text/eta=0.25"`` -> ``("text", 0.25)``: the modality and the missing rate η of a
    ``grid`` row. ValueError naming the value when it has another form or η is outside [0, 1]."""
    found = GRID_SCOPE.fullmatch(modalities)
    if found is None:
        raise ValueError(f"grid modalities {modalities!r}: expected '<modality>/eta=<0..1>'")
    eta = float(found["eta"])
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"grid modalities {modalities!r}: eta {eta} is outside [0, 1]")
    return found["modality"], eta


def grid_modalities(rows: Sequence[dict]) -> list[str]:
    """The modalities of the ``grid`` rows, in order of first appearance."""
    seen: dict[str, None] = {}
    for r in rows:
        if r["protocol"] == GRID:
            seen.setdefault(grid_scope(r["modalities"])[0], None)
    return list(seen)


def grid_matrix(
    rows: Sequence[dict], modality: str, metric: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The λ x η grid of ``modality`` for ``metric``: ``(lambdas (L,), etas (E,), values (E, L))``
    with ``values[i, j]`` the metric at η = ``etas[i]``, λ = ``lambdas[j]``, both ascending.

    A cell the table lacks is NaN (drawn blank); a cell given twice is a ValueError, and so is
    a modality without grid rows for ``metric``.
    """
    cells: dict[tuple[float, float], float] = {}
    for r in rows:
        if r["protocol"] != GRID or r["metric"] != metric:
            continue
        mod, eta = grid_scope(r["modalities"])
        if mod != modality:
            continue
        key = (eta, float(r["level"]))
        if key in cells:
            raise ValueError(
                f"grid {modality}: cell eta={key[0]}, lambda={key[1]} appears twice for {metric!r}"
            )
        cells[key] = float(r["value"])
    if not cells:
        raise ValueError(f"grid: no rows for modality {modality!r} and metric {metric!r}")
    etas = np.array(sorted({e for e, _ in cells}))
    lambdas = np.array(sorted({lam for _, lam in cells}))
    values = np.full((len(etas), len(lambdas)), np.nan)
    row_of = {e: i for i, e in enumerate(etas.tolist())}
    col_of = {lam: j for j, lam in enumerate(lambdas.tolist())}
    for (eta, lam), value in cells.items():
        values[row_of[eta], col_of[lam]] = value
    return lambdas, etas, values


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas: rendering without pyplot
    fig.savefig(path, dpi=DPI, format="png")
    fig.clear()  # drop the artists now rather than whenever the figure is collected
    return path


def curve_figure(
    protocol: str,
    series: dict[str, tuple[list[float], list[float]]],
    reference: dict[str, tuple[list[float], list[float]]],
    *,
    metric: str,
    split: str,
    floor: float | None = None,
) -> Figure:
    """The figure of one curve protocol: ``series`` and ``reference`` as `curve_series` gives
    them (the reference dashed, in its scope's colour); ``floor``: the constant predictor's
    value of ``metric`` (`robustmsa.evaluation.floor`), a dotted grey line. Not saved; a
    notebook displays it."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for i, (scope, (levels, values)) in enumerate(series.items()):
        color = f"C{i % 10}"
        ax.plot(levels, values, marker="o", markersize=3, color=color, label=scope)
        if scope in reference:
            ref_levels, ref_values = reference[scope]
            name = oracle_label(metric)
            label = name if len(series) == 1 else f"{name} ({scope})"
            ax.plot(ref_levels, ref_values, linestyle="--", color=color, label=label)
    _draw_floor(ax, floor)
    ax.set_xlabel(X_LABELS.get(protocol, "level"))
    ax.set_ylabel(_metric_label(metric))
    ax.set_xlim(0.0, 1.0)
    ax.set_title(f"{protocol} curve: {metric} on the {split} split")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def patterns_figure(
    series: dict[str, tuple[list[float], list[float]]],
    reference: dict[str, tuple[list[float], list[float]]],
    *,
    metric: str,
    split: str,
    floor: float | None = None,
) -> Figure:
    """One bar per available-modality subset (``series`` from `curve_series` of ``patterns``);
    the oracle as a dashed tick over each bar, the floor (`curve_figure`) dotted. Not saved."""
    fig = Figure(figsize=(max(6.4, 0.9 * len(series) + 2.0), 4.4), layout="constrained")
    ax = fig.add_subplot()
    names = list(series)
    x = np.arange(len(names))
    ax.bar(x, [series[n][1][0] for n in names], width=0.6, color="C0", label=split)
    labelled = False
    for i, name in enumerate(names):
        if name in reference:
            ax.hlines(
                reference[name][1][0],
                i - 0.35,
                i + 0.35,
                colors="k",
                linestyles="--",
                label=None if labelled else oracle_label(metric),
            )
            labelled = True
    _draw_floor(ax, floor)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_xlabel("available modalities")
    ax.set_ylabel(_metric_label(metric))
    ax.set_title(f"patterns: {metric} on the {split} split")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _draw_floor(ax, floor: float | None) -> None:
    """The constant predictor's value as a dotted grey line across ``ax`` (none when None or
    not finite)."""
    from robustmsa.evaluation.floor import FLOOR_LABEL

    if floor is not None and np.isfinite(floor):
        ax.axhline(floor, linestyle=":", color="0.4", label=FLOOR_LABEL)


def curve_figures(
    rows: Sequence[dict],
    out_dir: str | Path,
    *,
    reference_rows: Sequence[dict] | None = None,
    metric: str = "mae",
    split: str = "valid",
    floor: float | None = None,
) -> list[Path]:
    """Write one PNG per curve protocol present in ``rows`` (`CURVE_PROTOCOLS` order) and a bar
    chart for ``patterns`` when present; returns their paths (possibly none).

    ``reference_rows`` (the Bayes oracle's table on the same points) adds dashed curves labelled
    "Bayes oracle"; ``floor`` (the constant predictor's ``metric``) a dotted line; ``split``
    goes into the titles. ValueError when ``metric`` is not a metric of ``rows``.
    """
    _check_metric(rows, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric_part = _file_part("metric", metric)
    reference_rows = reference_rows or []
    paths = []
    for protocol in CURVE_PROTOCOLS:
        series = curve_series(rows, protocol, metric)
        if not series:
            continue
        reference = curve_series(reference_rows, protocol, metric)
        fig = curve_figure(protocol, series, reference, metric=metric, split=split, floor=floor)
        paths.append(_save(fig, out / f"curves_{protocol}_{metric_part}.png"))
    series = curve_series(rows, PATTERNS, metric)
    if series:
        reference = curve_series(reference_rows, PATTERNS, metric)
        fig = patterns_figure(series, reference, metric=metric, split=split, floor=floor)
        paths.append(_save(fig, out / f"patterns_{metric_part}.png"))
    return paths


def heatmap_figure(
    modality: str,
    lambdas: np.ndarray,
    etas: np.ndarray,
    values: np.ndarray,
    *,
    metric: str,
    split: str,
) -> Figure:
    """The heat map of `grid_matrix`'s output: λ on x, η on y, a coarse grid's cells annotated
    with their values. Not saved."""
    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    # pcolormesh on cell edges halfway between grid points: each cell centred on its (λ, η),
    # correct for uneven grids too.
    image = ax.pcolormesh(
        _edges(lambdas), _edges(etas), np.ma.masked_invalid(values), cmap="viridis"
    )
    if values.size <= ANNOTATE_MAX_CELLS:
        middle = np.nanmean(values) if np.isfinite(values).any() else 0.0
        for i, eta in enumerate(etas):
            for j, lam in enumerate(lambdas):
                if math.isfinite(values[i, j]):
                    ax.text(
                        lam,
                        eta,
                        f"{values[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize="x-small",
                        color="white" if values[i, j] < middle else "black",
                    )
    ax.set_xticks(lambdas, [f"{v:.2f}" for v in lambdas])
    ax.set_yticks(etas, [f"{v:.2f}" for v in etas])
    ax.set_xlabel("noise λ")
    ax.set_ylabel("missing η")
    ax.set_title(f"{modality}: {metric} over noise x missing on the {split} split")
    fig.colorbar(image, ax=ax, label=_metric_label(metric))
    return fig


def _edges(centres: np.ndarray) -> np.ndarray:
    """``(n + 1,)`` cell edges around ``n`` ascending centres (unit width for one centre)."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mids = (centres[:-1] + centres[1:]) / 2
    return np.concatenate(
        [[centres[0] - (mids[0] - centres[0])], mids, [centres[-1] + (centres[-1] - mids[-1])]]
    )


def heatmap_figures(
    rows: Sequence[dict], out_dir: str | Path, metric: str = "mae", *, split: str = "valid"
) -> list[Path]:
    """Write one λ (x) by η (y) heat map PNG per modality of the ``grid`` rows; returns their
    paths (none when the table has no grid). ValueError when ``metric`` is not in ``rows``."""
    _check_metric(rows, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric_part = _file_part("metric", metric)
    grid_rows = [r for r in rows if r["protocol"] == GRID and r["metric"] == metric]
    paths = []
    for modality in grid_modalities(grid_rows):
        lambdas, etas, values = grid_matrix(grid_rows, modality, metric)
        fig = heatmap_figure(modality, lambdas, etas, values, metric=metric, split=split)
        name = f"heatmap_{_file_part('grid modality', modality)}_{metric_part}.png"
        paths.append(_save(fig, out / name))
    return paths
