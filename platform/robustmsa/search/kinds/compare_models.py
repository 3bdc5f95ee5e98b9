"""Study kind ``compare_models``: models side by side on the same spectrum points, beside the
Bayes oracle.

Section ``compare_models:`` (`CompareModelsSection`). Each entry of ``compare_models.models``
(``{role: {name, params}}``) is trained once as a fixed variant
(`robustmsa.search.variants`) with the study's data, training and spectrum settings: a child
run tagged ``robustmsa.role = <role>``, selected on its own validation spectrum score and
evaluated once on test, exactly like a searched trial. The study's reference model (late
fusion by default) is trained first as usual and joins the comparison as role ``reference``.

The comparison is made on the study's validation protocols (``spectrum.protocols``), on both
splits: the validation rows each variant's best epoch was chosen on, and its ONE test
evaluation (the run's ``spectrum/spectrum_test.parquet``, read back, not re-evaluated; it
covers ``spectrum.report_protocols``, of which the validation points are kept). On synthetic
data the oracle is evaluated on the same corrupted inputs of each split.

The table (`SummaryRow`: ``split, model, summary, value``) has, per model and split:

- ``spectrum_mae``: `robustmsa.evaluation.summaries.spectrum_score` of the rows (the
  spectrum-averaged MAE that studies minimise: every protocol weighted equally);
- ``oracle_excess_mae``: ``spectrum_mae`` minus the oracle's (how far from the ceiling);
- ``clean_mae``, ``<protocol>/<modalities>/mean_mae`` for every curve (the trapezoid mean
  over its levels) and ``<protocol>/mean_mae`` for every point set (`summarize`).

It goes to the study's parent run as ``compare/<split>/<model>/<summary>`` metrics, a Parquet
artifact ``comparison/models.parquet``, an MLflow table ``tables/model_comparison.json`` and
one PNG per curve protocol and split (``comparison/<split>_<protocol>_<modalities>_mae.png``:
one line per model, the oracle dashed).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from robustmsa.config import ModelConfig, StudyConfig, build, check_role
from robustmsa.errors import ConfigError, RobustMSAError
from robustmsa.evaluation.summaries import spectrum_score, summarize
from robustmsa.search.kinds.base import (
    ORACLE,
    REFERENCE_ROLE,
    StudyKind,
    StudyResult,
    StudySetup,
    SummaryRow,
    Variant,
)
from robustmsa.spectrum.protocols import LEVEL_DECIMALS, POINT_SET_PROTOCOLS, build_points

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

ROLE_TAG = "robustmsa.role"  # robustmsa.search.trial.ROLE_TAG
TEST_ROWS_ARTIFACT = "spectrum/spectrum_test.parquet"


@dataclass
class CompareModelsSection:
    """The ``compare_models:`` section: ``models``, ``{role: {name, params}}`` (at least one)."""

    models: dict[str, ModelConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("models: compare_models needs at least one model ({role: {name}})")
        for role in self.models:
            check_role(role, f"models.{role}")


def check(config: StudyConfig) -> None:
    """Each entry names a registered model with valid params (load time)."""
    from robustmsa.models import MODELS

    for role, entry in config.kind_section.models.items():
        spec = MODELS.get(entry.name)
        if spec is None:
            raise ConfigError(
                f"compare_models.models.{role}.name: unknown model {entry.name!r} "
                f"(known: {sorted(MODELS)})"
            )
        build(spec.config_cls, entry.params, f"compare_models.models.{role}.params")


def model_variants(config: StudyConfig) -> list[Variant]:
    """One variant per ``compare_models.models`` entry, in the config's order."""
    return [
        Variant(role, {"model.name": entry.name, "model.params": entry.params})
        for role, entry in config.kind_section.models.items()
    ]


def point_rows(rows: list[dict], protocol_names: list[str]) -> list[dict]:
    """The rows of ``rows`` at the points of ``protocol_names`` (same protocol, scope and
    level); ValueError naming the first point that has no row."""

    def where(r) -> tuple[str, str, float]:
        return r["protocol"], r["modalities"], round(float(r["level"]), LEVEL_DECIMALS)

    wanted = {(p.protocol, p.modalities, p.level) for p in build_points(protocol_names)}
    kept = [r for r in rows if where(r) in wanted]
    found = {where(r) for r in kept}
    if wanted - found:
        protocol, modalities, level = sorted(wanted - found)[0]
        raise ValueError(f"no row for the point {protocol}/{modalities} at level {level}")
    return kept


def _summaries(rows: list[dict]) -> dict[str, float]:
    """``spectrum_mae``, ``clean_mae`` and every curve's and point set's ``mean_mae`` of one
    model's rows."""
    out = {"spectrum_mae": spectrum_score(rows)}
    clean = [r["value"] for r in rows if r["protocol"] == "clean" and r["metric"] == "mae"]
    if clean:
        out["clean_mae"] = float(clean[0])
    for key, value in summarize(rows).items():
        if key.endswith("/mean_mae"):  # curves and point sets (``patterns/mean_mae``)
            out[key.removeprefix("robust/")] = value
    return out


def summary_table(
    rows_by_model: dict[str, list[dict]], split: str, oracle_rows: list[dict] | None = None
) -> list[SummaryRow]:
    """Each model's summaries on ``split`` (module docstring), its ``oracle_excess_mae`` when
    ``oracle_rows`` are given, and the oracle's own summaries as model ``oracle``."""
    oracle = _summaries(oracle_rows) if oracle_rows else None
    out = []
    for model, rows in rows_by_model.items():
        summaries = _summaries(rows)
        if oracle is not None:
            summaries["oracle_excess_mae"] = summaries["spectrum_mae"] - oracle["spectrum_mae"]
        out += [SummaryRow(split, model, k, v) for k, v in summaries.items()]
    if oracle is not None:
        out += [SummaryRow(split, ORACLE, k, v) for k, v in oracle.items()]
    return out


def logged_test_rows(
    client: MlflowClient, experiment_id: str, parent_run_id: str, roles: list[str]
) -> dict[str, list[dict]]:
    """``{role: rows}`` of each role's one logged test evaluation (read back from its child
    run of ``parent_run_id``). RobustMSAError naming a role whose run has none."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )
    by_role = {r.data.tags.get(ROLE_TAG): r.info.run_id for r in runs}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for role in roles:
            run_id = by_role.get(role)
            if run_id is None:
                raise RobustMSAError(f"compare_models: no run of role {role!r}")
            try:
                local = client.download_artifacts(run_id, TEST_ROWS_ARTIFACT, tmp)
            except Exception as exc:  # MLflow raises its own errors for a missing artifact
                raise RobustMSAError(
                    f"compare_models: run {run_id} ({role}) has no test evaluation "
                    f"({TEST_ROWS_ARTIFACT}): {exc}"
                ) from exc
            out[role] = pq.read_table(local).to_pylist()
    return out


def _figures(out: Path, rows_by_split: dict[str, dict[str, list[dict]]]) -> None:
    """One PNG per split and curve (``missing/all``, ...): MAE per model, the oracle dashed."""
    from robustmsa.evaluation.figures import curve_figure, curve_series

    for split, by_model in rows_by_split.items():
        oracle = by_model.get(ORACLE, [])
        curves = sorted(
            {
                (r["protocol"], r["modalities"])
                for rows in by_model.values()
                for r in rows
                if r["protocol"] not in POINT_SET_PROTOCOLS and r["protocol"] != "clean"
            }
        )
        for protocol, scope in curves:

            def curve(rows, p=protocol, s=scope):
                return curve_series([r for r in rows if r["modalities"] == s], p, "mae").get(s)

            series = {m: curve(rows) for m, rows in by_model.items() if m != ORACLE}
            ref = curve(oracle)
            fig = curve_figure(
                f"{protocol}@{scope}",
                {m: c for m, c in series.items() if c is not None},
                {m: ref for m in series} if ref else {},
                metric="mae",
                split=split,
            )
            fig.savefig(out / f"{split}_{protocol}_{scope}_mae.png", dpi=100)


def log_summary_table(
    client: MlflowClient,
    run_id: str,
    table: list[SummaryRow],
    rows_by_split: dict[str, dict[str, list[dict]]],
) -> None:
    """Log ``table`` and the figures of ``rows_by_split`` (``{split: {model: rows}}``, the
    oracle as model ``oracle``) to the parent run ``run_id`` (module docstring)."""
    import pandas as pd

    from robustmsa.tracking.runs import log_metrics
    from robustmsa.tracking.spectrum import metric_key

    # A grid point's summary names its level (``eta=0.00``): MLflow's names refuse '='.
    names = [metric_key(f"compare/{r.split}/{r.model}/{r.summary}") for r in table]
    log_metrics(client, run_id, [(n, r.value, 0) for n, r in zip(names, table, strict=True)])
    plain = [dataclasses.asdict(r) for r in table]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "comparison"
        out.mkdir()
        pq.write_table(pa.Table.from_pylist(plain), out / "models.parquet")
        _figures(out, rows_by_split)
        client.log_artifacts(run_id, str(out), artifact_path="comparison")
    client.log_table(run_id, pd.DataFrame(plain), "tables/model_comparison.json")


def format_comparison(table: list[SummaryRow]) -> str:
    """A plain-text table: one line per model, its spectrum MAE and oracle excess per split."""
    splits = list(dict.fromkeys(r.split for r in table))
    models = list(dict.fromkeys(r.model for r in table))
    value = {(r.split, r.model, r.summary): r.value for r in table}
    head = "".join(f" {s + ' MAE':>11} {'excess':>7}" for s in splits)
    lines = [f"  {'model':<20}{head}"]
    for m in models:
        cells = ""
        for s in splits:
            mae = value.get((s, m, "spectrum_mae"))
            excess = value.get((s, m, "oracle_excess_mae"))
            cells += f" {mae:>11.4f}" if mae is not None else f" {'-':>11}"
            cells += f" {excess:>7.4f}" if excess is not None else f" {'-':>7}"
        lines.append(f"  {m:<20}{cells}")
    return "\n".join(lines)


def run(setup: StudySetup) -> None:
    """Train every entry, log the comparison of all of them (and of the reference) on both
    splits to the parent run and keep its table in the result."""
    from robustmsa.data.parquet import open_dataset
    from robustmsa.evaluation.ceiling import oracle_rows
    from robustmsa.evaluation.floor import FLOOR, floor_predictions, train_median
    from robustmsa.evaluation.spectrum import SpectrumEvaluator

    config = setup.config
    protocols = config.spectrum.protocols
    valid = setup.train(model_variants(config), config.study.kind)
    if setup.reference is not None:
        valid = {REFERENCE_ROLE: setup.reference, **valid}
    test = logged_test_rows(setup.client, setup.result.experiment_id, setup.parent, list(valid))
    cache = Path(setup.base["data"]["cache_dir"]) / "frames"
    dataset = open_dataset(setup.data_root, frame_cache=cache)
    table, by_split = [], {}
    for split, by_model in (("valid", valid), ("test", test)):
        by_model = {m: point_rows(rows, protocols) for m, rows in by_model.items()}
        evaluator = SpectrumEvaluator(
            dataset[split], build_points(protocols), seed=config.spectrum.eval_seed
        )
        oracle = oracle_rows(evaluator)
        # The floor beside the models: the training median, scored on the same points.
        constant = floor_predictions(train_median(dataset["train"].labels.numpy()), evaluator)
        by_model[FLOOR] = evaluator.table(constant)
        table += summary_table(by_model, split, oracle)
        by_split[split] = {**by_model, **({ORACLE: oracle} if oracle else {})}
    log_summary_table(setup.client, setup.parent, table, by_split)
    setup.result.rows = table


def format_lines(result: StudyResult) -> list[str]:
    return [
        "Spectrum-averaged MAE on the validation protocols, excess over the oracle:",
        format_comparison(result.rows),
    ]


KIND = StudyKind(
    name="compare_models",
    section=CompareModelsSection,
    run=run,
    trial_count=lambda config: len(config.kind_section.models),
    check=check,
    reference="first",
    format=format_lines,
)
