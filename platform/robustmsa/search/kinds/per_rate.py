"""Study kind ``per_rate``: one specialist per missing (or noise) rate (TFR-Net / EMT-DLFR).

Section ``per_rate:`` (`PerRateSection`): one specialist per level ``r`` of ``levels``,
trained with every sample at rate ``r`` of ``axis`` (``missing`` or ``noise``) on all
modalities (sampler ``fixed``; docs/references.md). The per-rate curve at ``r`` is the
specialist of ``r`` evaluated at ``r``. The kind ``one_checkpoint_for_all`` adds QA-MoE's one
model trained on the study's training spectrum, evaluated at every ``r``
(`robustmsa.search.kinds.one_checkpoint_for_all`). Both on the same validation points (same
seed, same corrupted inputs), beside the Bayes oracle on synthetic data.

Every specialist is an ordinary trial run (role ``rate-0.30`` ...), selected on its own
validation spectrum score like any trial (our reading: the papers do not say how their
per-rate checkpoints were chosen) and evaluated once on test. The comparison table
(`CurveRow`: ``model, level, metric, value``; models ``per_rate``, ``one_checkpoint``,
``oracle``) is logged to the study's parent run as ``compare/<model>/<metric>`` metrics
(step = level x 100), ``compare/<model>/auilc_<metric>`` and ``mean_<metric>`` summaries, a
Parquet artifact, an MLflow table and a PNG figure. The reference model trains first.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from robustmsa.config import StudyConfig
from robustmsa.errors import ConfigError
from robustmsa.evaluation.summaries import curve_auilc, curve_mean
from robustmsa.search.kinds.base import (
    ORACLE,
    CurveRow,
    StudyKind,
    StudyResult,
    StudySetup,
    Variant,
)
from robustmsa.spectrum.protocols import ALL, DEFAULT_LEVELS, LEVEL_DECIMALS, format_level

PER_RATE = "per_rate"
ONE_CHECKPOINT = "one_checkpoint"


@dataclass
class PerRateSection:
    """The ``per_rate:`` (and ``one_checkpoint_for_all:``) section (module docstring)."""

    axis: Literal["missing", "noise"] = "missing"
    levels: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])

    def __post_init__(self) -> None:
        if not self.levels or any(not 0.0 <= v <= 1.0 for v in self.levels):
            raise ValueError(
                f"levels: must be a non-empty list of values in [0, 1], got {self.levels}"
            )
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"levels: values repeat in {self.levels}")


def specialist_role(level: float) -> str:
    return f"rate-{format_level(level)}"


def check(config: StudyConfig) -> None:
    """The compared curve is among the validation protocols (load time, before anything
    runs)."""
    axis, protocols = config.kind_section.axis, config.spectrum.protocols
    if axis not in protocols and f"{axis}@{ALL}" not in protocols:
        raise ConfigError(
            f"spectrum.protocols: study kind {config.study.kind} compares on {axis!r} or "
            f"'{axis}@{ALL}' (its {config.study.kind}.axis), which must be listed; got {protocols}"
        )
    # Each specialist is read at its own level on the curve its trial evaluated, and the
    # protocols evaluate their curves at DEFAULT_LEVELS: any other level would be found
    # missing only after every specialist had trained.
    off_curve = [
        v for v in config.kind_section.levels if round(v, LEVEL_DECIMALS) not in DEFAULT_LEVELS
    ]
    if off_curve:
        raise ConfigError(
            f"{config.study.kind}.levels: {off_curve} are not levels of the {axis!r} curve, "
            f"which is evaluated at {list(DEFAULT_LEVELS)}"
        )


def specialist_variants(config: StudyConfig) -> list[Variant]:
    """One specialist per level of the section (sampler ``fixed`` at that level)."""
    s: PerRateSection = config.kind_section
    key = "spectrum.fixed_missing" if s.axis == "missing" else "spectrum.fixed_noise"
    return [Variant(specialist_role(r), {"spectrum.sampler": "fixed", key: r}) for r in s.levels]


def _curve_values(rows: list[dict], axis: str) -> dict[tuple[float, str], float]:
    """``{(level, metric): value}`` of the ``axis`` curve on all modalities."""
    return {
        (round(r["level"], 6), r["metric"]): r["value"]
        for r in rows
        if r["protocol"] == axis and r["modalities"] == ALL
    }


def curve_table(
    variant_rows: dict[str, list[dict]],
    axis: str,
    levels: list[float],
    oracle_rows: list[dict] | None = None,
) -> list[CurveRow]:
    """One row per level and metric: the specialist of the level at that level
    (``per_rate``), the one checkpoint (when trained) and the oracle."""
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
            out.append(CurveRow(PER_RATE, level, metric, own[(level, metric)]))
            for model, values in curves.items():
                if (level, metric) in values:
                    out.append(CurveRow(model, level, metric, values[(level, metric)]))
    return out


def curve_summaries(table: list[CurveRow]) -> dict[str, float]:
    """``compare/<model>/auilc_<metric>`` (EMT-DLFR's trapezoid) and ``mean_<metric>``
    (width-normalised) per model and metric, over the table's levels."""
    series: dict[tuple[str, str], dict[float, float]] = {}
    for r in table:
        series.setdefault((r.model, r.metric), {})[r.level] = r.value
    out = {}
    for (model, metric), points in sorted(series.items()):
        if len(points) < 2:
            continue
        levels = tuple(sorted(points))
        values = tuple(points[lv] for lv in levels)
        out[f"compare/{model}/auilc_{metric}"] = curve_auilc(levels, values)
        out[f"compare/{model}/mean_{metric}"] = curve_mean(levels, values)
    return out


def log_curve_table(client, run_id: str, table: list[CurveRow], axis: str) -> None:
    """Log ``table`` to the parent run ``run_id`` (module docstring)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from robustmsa.evaluation.figures import curve_figure, curve_series
    from robustmsa.tracking.runs import log_metrics

    points = [(f"compare/{r.model}/{r.metric}", r.value, round(r.level * 100)) for r in table]
    summaries = curve_summaries(table)
    plain = [dataclasses.asdict(r) for r in table]
    log_metrics(client, run_id, points + [(k, v, 0) for k, v in summaries.items()])
    as_rows = [
        {"protocol": axis, "modalities": r.model, "level": r.level, "metric": r.metric,
         "value": r.value}
        for r in table
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "comparison"
        out.mkdir()
        pq.write_table(pa.Table.from_pylist(plain), out / "comparison_valid.parquet")
        fig = curve_figure(
            axis, curve_series(as_rows, axis, "mae"), {}, metric="mae", split="valid"
        )
        fig.savefig(out / "comparison_mae.png", dpi=100)
        client.log_artifacts(run_id, str(out), artifact_path="comparison")
    client.log_table(run_id, pd.DataFrame(plain), "tables/comparison_valid.json")


def compare(setup: StudySetup, variants: list[Variant]) -> None:
    """Train ``variants`` (the specialists, and the one checkpoint), log the curve table to
    the parent run and keep it in the result."""
    from robustmsa.data.parquet import open_dataset
    from robustmsa.evaluation.ceiling import oracle_rows
    from robustmsa.evaluation.spectrum import SpectrumEvaluator
    from robustmsa.spectrum import build_points

    config = setup.config
    s: PerRateSection = config.kind_section
    rows = setup.train(variants, config.study.kind)
    cache = Path(setup.base["data"]["cache_dir"]) / "frames"
    valid = open_dataset(setup.data_root, frame_cache=cache)["valid"]
    points = build_points([f"{s.axis}@{ALL}"], levels=s.levels)
    evaluator = SpectrumEvaluator(valid, points, seed=config.spectrum.eval_seed)
    table = curve_table(rows, s.axis, s.levels, oracle_rows(evaluator))
    log_curve_table(setup.client, setup.parent, table, s.axis)
    setup.result.rows = table


def run(setup: StudySetup) -> None:
    compare(setup, specialist_variants(setup.config))


def format_lines(result: StudyResult) -> list[str]:
    """Each model's mean MAE over the compared levels."""
    summaries = curve_summaries(result.rows)
    lines = ["Mean MAE over the compared levels (per-rate specialists, one checkpoint, oracle):"]
    for key, value in summaries.items():
        if key.endswith("/mean_mae"):
            lines.append(f"  {key.split('/')[1]:<20} {value:.4f}")
    return lines


KIND = StudyKind(
    name="per_rate",
    section=PerRateSection,
    run=run,
    trial_count=lambda config: len(config.kind_section.levels),
    check=check,
    reference="first",
    smoke={"per_rate.levels": [0.0, 0.5, 1.0]},
    format=format_lines,
)
