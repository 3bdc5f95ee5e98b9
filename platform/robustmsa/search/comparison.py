"""The per-rate protocol and the One-Checkpoint-for-All comparison (``search.kind``).

Per-rate (TFR-Net / EMT-DLFR; docs/references.md): one specialist per level ``r`` of
``search.levels``, trained with every sample at missing rate ``r`` (or noise ``r``) on all
modalities (sampler ``fixed``). The per-rate curve at ``r`` is the specialist of ``r``
evaluated at ``r``. One-Checkpoint-for-All (QA-MoE): one model trained on the study's
training spectrum (its ``spectrum.sampler``), evaluated at every ``r``. Both on the same
validation points (same seed, same corrupted inputs), beside the Bayes oracle on synthetic
data.

Every specialist is an ordinary trial run (role ``rate-0.30`` ...), selected on its own
validation spectrum score like any trial (our reading: the papers do not say how their
per-rate checkpoints were chosen) and evaluated once on test. The comparison table
(``model, level, metric, value``; models ``per_rate``, ``one_checkpoint``, ``oracle``) is
logged to the study's parent run as ``compare/<model>/<metric>`` metrics (step = level x 100),
``compare/<model>/auilc_<metric>`` and ``mean_<metric>`` summaries, a Parquet artifact, an
MLflow table and a PNG figure.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from robustmsa.config import StudyConfig
from robustmsa.errors import ConfigError
from robustmsa.evaluation.summaries import curve_auilc, curve_mean
from robustmsa.search.variants import Variant
from robustmsa.spectrum.protocols import ALL, format_level
from robustmsa.tracking.runs import log_metrics

PER_RATE = "per_rate"
ONE_CHECKPOINT = "one_checkpoint"
ORACLE = "oracle"
COMPARISON_FIELDS = ("model", "level", "metric", "value")


def specialist_role(level: float) -> str:
    return f"rate-{format_level(level)}"


def comparison_variants(config: StudyConfig) -> list[Variant]:
    """The variants of ``config.search.kind`` (``per_rate`` or ``one_checkpoint_for_all``)."""
    s = config.search
    axis = s.per_rate_axis
    protocols = config.spectrum.protocols
    if axis not in protocols and f"{axis}@{ALL}" not in protocols:
        raise ConfigError(
            f"search.kind {s.kind}: spectrum.protocols must include {axis!r} or "
            f"'{axis}@{ALL}' (the points the models are compared on), got {protocols}"
        )
    key = "spectrum.fixed_missing" if axis == "missing" else "spectrum.fixed_noise"
    variants = [
        Variant(specialist_role(r), {"spectrum.sampler": "fixed", key: r}) for r in s.levels
    ]
    if s.kind == "one_checkpoint_for_all":
        variants.insert(0, Variant(ONE_CHECKPOINT, {}))
    return variants


def _curve_values(rows: list[dict], axis: str) -> dict[tuple[float, str], float]:
    """``{(level, metric): value}`` of the ``axis`` curve on all modalities."""
    return {
        (round(r["level"], 6), r["metric"]): r["value"]
        for r in rows
        if r["protocol"] == axis and r["modalities"] == ALL
    }


def comparison_table(
    variant_rows: dict[str, list[dict]],
    axis: str,
    levels: list[float],
    oracle_rows: list[dict] | None = None,
) -> list[dict]:
    """Long-form rows ``(model, level, metric, value)`` for every level: the specialist of the
    level at that level (``per_rate``), the one checkpoint (when trained) and the oracle."""
    curves: dict[str, dict[tuple[float, str], float]] = {}
    if ONE_CHECKPOINT in variant_rows:
        curves[ONE_CHECKPOINT] = _curve_values(variant_rows[ONE_CHECKPOINT], axis)
    if oracle_rows:
        curves[ORACLE] = _curve_values(oracle_rows, axis)
    out = []
    for level in levels:
        level = round(level, 6)
        own = _curve_values(variant_rows[specialist_role(level)], axis)
        metrics = sorted(m for (lv, m) in own if lv == level)
        if not metrics:
            raise ValueError(f"{specialist_role(level)}: no {axis}@{ALL} point at level {level}")
        for metric in metrics:
            out.append(
                {"model": PER_RATE, "level": level, "metric": metric, "value": own[(level, metric)]}
            )
            for model, values in curves.items():
                if (level, metric) in values:
                    out.append(
                        {
                            "model": model,
                            "level": level,
                            "metric": metric,
                            "value": values[(level, metric)],
                        }
                    )
    return out


def comparison_summaries(table: list[dict]) -> dict[str, float]:
    """``compare/<model>/auilc_<metric>`` (EMT-DLFR's trapezoid) and ``mean_<metric>``
    (width-normalised) per model and metric, over the table's levels."""
    series: dict[tuple[str, str], dict[float, float]] = {}
    for r in table:
        series.setdefault((r["model"], r["metric"]), {})[r["level"]] = r["value"]
    out = {}
    for (model, metric), points in sorted(series.items()):
        if len(points) < 2:
            continue
        levels = tuple(sorted(points))
        values = tuple(points[lv] for lv in levels)
        out[f"compare/{model}/auilc_{metric}"] = curve_auilc(levels, values)
        out[f"compare/{model}/mean_{metric}"] = curve_mean(levels, values)
    return out


def log_comparison(client: MlflowClient, run_id: str, table: list[dict], axis: str) -> None:
    """Log ``table`` to the parent run ``run_id`` (module docstring)."""
    from robustmsa.evaluation.figures import curve_figure, curve_series

    points = [
        (f"compare/{r['model']}/{r['metric']}", r["value"], round(r["level"] * 100)) for r in table
    ]
    summaries = comparison_summaries(table)
    log_metrics(client, run_id, points + [(k, v, 0) for k, v in summaries.items()])
    as_rows = [
        {
            "protocol": axis,
            "modalities": r["model"],
            **{k: r[k] for k in ("level", "metric", "value")},
        }
        for r in table
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "comparison"
        out.mkdir()
        pq.write_table(pa.Table.from_pylist(table), out / "comparison_valid.parquet")
        fig = curve_figure(
            axis, curve_series(as_rows, axis, "mae"), {}, metric="mae", split="valid"
        )
        fig.savefig(out / "comparison_mae.png", dpi=100)
        client.log_artifacts(run_id, str(out), artifact_path="comparison")
    import pandas as pd

    client.log_table(run_id, pd.DataFrame(table), "tables/comparison_valid.json")
