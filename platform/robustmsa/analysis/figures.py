"""Drawing a study for a notebook: spectrum curves, heat maps, the trials' scores over time,
parameter effects and importances, and each model's distance from the oracle.

Each function returns a matplotlib `Figure` with its own canvas, never pyplot (as
`robustmsa.evaluation.figures` does): nothing is shown or saved here, and no global figure
state is left behind in a notebook's kernel."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

from robustmsa.analysis.names import COMPLETED, OBJECTIVE, PRUNED, SEARCH_METRIC
from robustmsa.config import ParamSpace
from robustmsa.evaluation.figures import (
    CURVE_PROTOCOLS,
    ORACLE_LABEL,
    X_LABELS,
    curve_series,
    grid_matrix,
    grid_modalities,
    heatmap_figure,
)

if TYPE_CHECKING:
    from robustmsa.analysis.optuna_rebuild import Importances


def spectrum_curves_figure(
    tables: Mapping[str, Sequence[Mapping] | None],
    protocol: str,
    *,
    oracle: Sequence[Mapping] | None = None,
    metric: str = "mae",
    split: str = "test",
    scopes: Sequence[str] | None = None,
    floor: float | None = None,
) -> Figure:
    """One panel per modality scope of the curve ``protocol`` (``missing``, ``noise``,
    ``joint``): a line per entry of ``tables`` (``{label: rows}``, e.g. the trial and the
    reference model; None entries skipped), the oracle's curve dashed in black (labelled a
    ceiling only on the metrics it bounds), ``floor`` (the constant predictor's ``metric``,
    `study_floor`) dotted grey. ``scopes``: the panels (all scopes of the first table by
    default). ValueError when no table has the curve."""
    from robustmsa.evaluation.figures import METRIC_LABELS, oracle_label
    from robustmsa.evaluation.floor import FLOOR_LABEL

    series = {label: curve_series(rows, protocol, metric) for label, rows in tables.items() if rows}
    ceiling = curve_series(oracle, protocol, metric) if oracle else {}
    found = list(dict.fromkeys(s for curves in series.values() for s in curves))
    panels = list(scopes) if scopes else found
    if not panels:
        raise ValueError(f"no {protocol} curve of {metric!r} in the tables {list(tables)}")
    cols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / cols)
    size = (3.6 * cols, 3.2 * nrows + 0.6) if len(panels) > 1 else (6.4, 4.4)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, cols, sharey=True, squeeze=False).ravel()
    for ax, scope in zip(axes, panels, strict=False):
        for i, (label, curves) in enumerate(series.items()):
            if scope in curves:
                levels, values = curves[scope]
                ax.plot(levels, values, marker="o", markersize=3, color=f"C{i}", label=label)
        if scope in ceiling:
            levels, values = ceiling[scope]
            ax.plot(levels, values, linestyle="--", color="black", label=oracle_label(metric))
        if floor is not None and math.isfinite(floor):
            ax.axhline(floor, linestyle=":", color="0.4", label=FLOOR_LABEL)
        ax.set_title(scope)
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel(X_LABELS.get(protocol, "level"))
        ax.grid(True, alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric))
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{protocol} curves: {metric} on the {split} split")
    return fig


def heatmap_figures(
    rows: Sequence[Mapping], *, metric: str = "mae", split: str = "test", title: str = ""
) -> list[Figure]:
    """One λ x η heat map per modality of the ``grid`` rows of ``rows`` (`heatmap_figure`,
    unsaved); ``title`` prefixes each figure's title. Empty when there is no grid."""
    grid = [r for r in rows if r["protocol"] == "grid" and r["metric"] == metric]
    figures = []
    for modality in grid_modalities(grid):
        lambdas, etas, values = grid_matrix(grid, modality, metric)
        fig = heatmap_figure(modality, lambdas, etas, values, metric=metric, split=split)
        if title:
            ax = fig.axes[0]
            ax.set_title(f"{title}: {ax.get_title()}", fontsize="medium")
        figures.append(fig)
    return figures


def score_history_figure(
    history: pd.DataFrame,
    *,
    reference: float | None = None,
    oracle: float | None = None,
    x: str = "elapsed_s",
) -> Figure:
    """The trials' scores over time (``x`` = ``elapsed_s``, seconds since the study started)
    or over epochs (``x`` = ``step``), from `score_history`: a line per trial, completed
    trials solid, pruned ones dotted and ending in a cross; the reference model's and the
    oracle's scores as horizontal lines when given."""
    fig = Figure(figsize=(8.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (trial_id, points) in enumerate(history.groupby("trial_id", sort=False)):
        points = points.sort_values("step")
        pruned = points["outcome"].iloc[0] == PRUNED
        color = f"C{i % 10}"
        ax.plot(
            points[x],
            points["value"],
            linestyle=":" if pruned else "-",
            marker="o",
            markersize=3,
            color=color,
            label=f"{trial_id} ({points['outcome'].iloc[0] or 'running'})",
        )
        if pruned:
            ax.plot(points[x].iloc[-1], points["value"].iloc[-1], "x", color=color, ms=9)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="-.", label=f"reference {reference:.4f}")
    if oracle is not None:
        ax.axhline(oracle, color="black", linestyle="--", label=f"{ORACLE_LABEL} {oracle:.4f}")
    metric = history["metric"].iloc[0] if len(history) else OBJECTIVE
    ax.set_xlabel("seconds since the study started" if x == "elapsed_s" else "epoch")
    ax.set_ylabel(f"{metric} (lower is better)")
    ax.set_title("trials' validation scores" + (" over time" if x == "elapsed_s" else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", ncols=2)
    return fig


def param_effects_figure(
    trials: pd.DataFrame, space: Sequence[ParamSpace], *, reference: float | None = None
) -> Figure:
    """One panel per searched parameter: each trial's score against the value it drew
    (completed filled, pruned hollow; a log axis for a log-scale parameter), the reference
    model's score as a horizontal line when given. ValueError for an empty ``space``."""
    if not space:
        raise ValueError("the study searched no parameter")
    cols = min(len(space), 4)
    nrows = math.ceil(len(space) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.2 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, cols, sharey=True, squeeze=False).ravel()
    for ax, p in zip(axes, space, strict=False):
        for outcome, style in ((COMPLETED, {"color": "C0"}), (PRUNED, {"facecolors": "none"})):
            shown = trials[trials["outcome"] == outcome]
            x = shown[p.name] if p.type != "categorical" else shown[p.name].astype(str)
            ax.scatter(x, shown["score"], edgecolors="C0", label=outcome, **style)
        if reference is not None:
            ax.axhline(reference, color="grey", linestyle="-.", label="reference")
        bounds = _bounds(p, space)
        if p.log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        elif p.type == "int":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if bounds:  # the searched range, so that one sees where in it the trials fell
            low, high = bounds
            pad = (high / low) ** 0.05 if p.log else (high - low) * 0.05 or 0.5
            ax.set_xlim(*((low / pad, high * pad) if p.log else (low - pad, high + pad)))
        ax.set_xlabel(p.name.rsplit(".", 1)[-1])
        ax.grid(True, alpha=0.3)
    for ax in axes[len(space) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(f"{SEARCH_METRIC} (lower is better)")
    axes[0].legend(fontsize="small")
    fig.suptitle("parameter effects: each trial's score against its parameters")
    return fig


def _bounds(p: ParamSpace, space: Sequence[ParamSpace]) -> tuple[float, float] | None:
    """``p``'s searched range; a bound naming another parameter takes that one's upper bound."""
    if p.type == "categorical":
        return None
    high = p.high
    if isinstance(high, str):
        named = [q.high for q in space if q.name == high and not isinstance(q.high, str)]
        if not named:
            return None
        high = named[0]
    return float(p.low), float(high)


def importance_figure(importances: Importances) -> Figure:
    """A horizontal bar per parameter (`param_importances`), the most important on top; the
    notes as the figure's caption, and only them when there is nothing to draw."""
    fig = Figure(figsize=(7.0, 0.5 * max(len(importances.values), 2) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    values = importances.values.iloc[::-1]
    if len(values):
        ax.barh([n.rsplit(".", 1)[-1] for n in values.index], values.to_numpy(), color="C0")
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    else:
        ax.set_axis_off()
    ax.set_title(f"parameter importance over {importances.completed} completed trial(s)")
    if importances.notes:
        lines = [textwrap.fill(n, 100) for n in importances.notes]
        fig.supxlabel("\n".join(lines), fontsize="x-small", ha="left", x=0.01)
    return fig


def oracle_gap_figure(table: pd.DataFrame, summary: str = "oracle_excess_mae") -> Figure:
    """Grouped bars of ``summary`` (the excess over the oracle's spectrum MAE by default) per
    model and split, from `model_comparison_table`; models without it (the oracle) left out."""
    splits = [s for s, k in table.columns if k == summary]
    if not splits:
        raise ValueError(f"the table has no {summary!r} column")
    data = table[[(s, summary) for s in splits]].dropna(how="all")
    fig = Figure(figsize=(max(6.0, 1.1 * len(data) + 2.0), 4.4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(data))
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, data[(split, summary)], width, label=split)
    ax.set_xticks(x, list(data.index), rotation=30, ha="right")
    ax.set_ylabel(f"{summary} (lower is better)")
    ax.set_title("each model's distance from the Bayes oracle")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def curve_protocols(rows: Sequence[Mapping]) -> list[str]:
    """The curve protocols of ``rows`` (`CURVE_PROTOCOLS` order)."""
    present = {r["protocol"] for r in rows}
    return [p for p in CURVE_PROTOCOLS if p in present]
