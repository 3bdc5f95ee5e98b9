"""Study kind compare_models: its config, table, and the
whole study kind embedded (local Ray, sqlite MLflow)."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from paths import REPO
from robustmsa.cli import format_result
from robustmsa.config import load
from robustmsa.errors import ConfigError
from robustmsa.evaluation.summaries import spectrum_score
from robustmsa.search.kinds.compare_models import (
    ORACLE,
    format_comparison,
    model_variants,
    point_rows,
    summary_table,
)
from robustmsa.search.study import run_study
from robustmsa.search.trial import ROLE_TAG

STUDY_YAML = REPO / "studies" / "configs" / "model_comparison.yaml"


def _curve(protocol, modalities, values, metric="mae"):
    return [
        {"protocol": protocol, "modalities": modalities, "level": lv, "metric": metric, "value": v}
        for lv, v in values.items()
    ]


def _table(clean, missing, noise):
    """Rows of the protocols ``clean, missing@all, noise@all`` at levels 0, 0.5, 1."""
    return (
        _curve("clean", "all", {0.0: clean})
        + _curve("missing", "all", dict(zip((0.0, 0.5, 1.0), missing, strict=True)))
        + _curve("noise", "all", dict(zip((0.0, 0.5, 1.0), noise, strict=True)))
    )


def test_variants_are_the_configured_models_in_order():
    config = load(STUDY_YAML)
    variants = model_variants(config)
    assert [v.role for v in variants] == list(config.kind_section.models)
    gate_off = {v.role: v for v in variants}["qa_moe-no-quality-gate"]
    assert gate_off.overrides == {
        "model.name": "qa_moe",
        "model.params": {"quality_gate": False},
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "compare_models.models.x={name: nope}",
            r"compare_models\.models\.x\.name: unknown model 'nope'",
        ),
        (
            "compare_models.models.x={name: qa_moe, params: {quality_gate: 3}}",
            r"compare_models\.models\.x\.params\.quality_gate: expected bool, got 3",
        ),
        (
            "compare_models.models.x={name: qa_moe, params: {nope: 1}}",
            r"compare_models\.models\.x\.params\.nope",
        ),
        (
            "compare_models.models.reference={name: qa_moe}",
            r"compare_models\.models\.reference: a role is",
        ),
        (
            "compare_models.models.oracle={name: qa_moe}",
            r"compare_models\.models\.oracle: a role is",
        ),
        ("compare_models.models.a/b={name: qa_moe}", r"compare_models\.models\.a/b: a role is"),
        (
            "compare_models.models={}",
            r"compare_models\.models: compare_models needs at least one model",
        ),
    ],
)
def test_bad_model_entries_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load(STUDY_YAML, [override])


def test_table_gives_spectrum_mae_and_excess_over_the_oracle():
    a = _table(0.5, (0.5, 0.7, 1.1), (0.5, 0.6, 0.9))
    b = _table(0.6, (0.6, 0.65, 0.8), (0.6, 0.62, 0.7))
    oracle = _table(0.3, (0.3, 0.5, 0.7), (0.3, 0.4, 0.5))
    table = summary_table({"a": a, "b": b}, "valid", oracle)
    got = {(r.model, r.summary): r.value for r in table}
    assert {r.split for r in table} == {"valid"}
    # missing@all: trapezoid mean ((0.5 + 0.7) / 2 + (0.7 + 1.1) / 2) / 2 = 0.75
    assert got[("a", "missing/all/mean_mae")] == pytest.approx(0.75)
    assert got[("a", "clean_mae")] == 0.5
    for model, rows in (("a", a), ("b", b), (ORACLE, oracle)):
        assert got[(model, "spectrum_mae")] == pytest.approx(spectrum_score(rows))
    assert got[("b", "oracle_excess_mae")] == pytest.approx(
        spectrum_score(b) - spectrum_score(oracle)
    )
    assert (ORACLE, "oracle_excess_mae") not in got
    text = format_comparison(table)
    assert text.splitlines()[1].split()[:2] == ["a", f"{got[('a', 'spectrum_mae')]:.4f}"]


def test_table_without_an_oracle_has_no_excess():
    table = summary_table({"a": _table(0.5, (0.5, 0.7, 1.1), (0.5, 0.6, 0.9))}, "test")
    assert {r.summary for r in table} >= {"spectrum_mae", "clean_mae"}
    assert not any(r.summary == "oracle_excess_mae" or r.model == ORACLE for r in table)


def test_point_rows_keep_the_protocols_points_and_name_a_missing_one():
    full = _table(0.5, (0.5, 0.7, 1.1), (0.5, 0.6, 0.9)) + _curve("joint", "all", {0.5: 9.0})
    levels = [round(0.1 * i, 1) for i in range(11)]
    rows = _curve("clean", "all", {0.0: 0.5}) + _curve("missing", "all", dict.fromkeys(levels, 1))
    kept = point_rows(rows + _curve("joint", "all", {0.5: 9.0}), ["clean", "missing@all"])
    assert kept == rows
    with pytest.raises(ValueError, match=r"no row for the point missing/all at level 0\.1"):
        point_rows(full, ["clean", "missing@all"])


def test_compare_models_study_logs_each_model_on_both_splits(tmp_path, local_ray):
    overrides = {
        "data.preset": "tiny",
        "data.cache_dir": str(tmp_path / "data"),
        "training.epochs": 1,
        "spectrum.protocols": "[clean, missing@all]",
        "compare_models.models": "{qa_moe: {name: qa_moe, params: {hidden: 16, "
        "expert_hidden: 32}}, "
        "qa_moe-no-gate: {name: qa_moe, params: {hidden: 16, expert_hidden: 32, "
        "quality_gate: false}}}",
    }
    config = load(STUDY_YAML, [f"{k}={v}" for k, v in overrides.items()])
    result = run_study(config, root=tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    children = client.search_runs(
        [result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    roles = {c.data.tags[ROLE_TAG]: c for c in children}
    assert set(roles) == {"reference", "qa_moe", "qa_moe-no-gate"}
    assert roles["qa_moe-no-gate"].data.params["model.params.quality_gate"] == "False"
    assert roles["reference"].data.params["model.name"] == "late_fusion"
    parent = client.get_run(result.parent_run_id).data.metrics
    for role, run in roles.items():
        # Each split's figure is the model's own logged evaluation, not a new one.
        for split, prefix in (("valid", ""), ("test", "test/")):
            local = client.download_artifacts(
                run.info.run_id, f"spectrum/spectrum_{split}.parquet", str(tmp_path / role)
            )
            rows = point_rows(pq.read_table(local).to_pylist(), ["clean", "missing@all"])
            assert parent[f"compare/{split}/{role}/spectrum_mae"] == pytest.approx(
                spectrum_score(rows), rel=1e-12
            )
            assert run.data.metrics[f"{prefix}spectrum/clean/all/mae"] == pytest.approx(
                parent[f"compare/{split}/{role}/clean_mae"], rel=1e-12
            )
            excess = parent[f"compare/{split}/{role}/oracle_excess_mae"]
            assert excess == pytest.approx(
                parent[f"compare/{split}/{role}/spectrum_mae"]
                - parent[f"compare/{split}/{ORACLE}/spectrum_mae"]
            )
            assert excess > 0  # the Bayes oracle is the ceiling on the same inputs
    local = client.download_artifacts(
        result.parent_run_id, "comparison/models.parquet", str(tmp_path / "parent")
    )
    assert pq.read_table(local).to_pylist() == [dataclasses.asdict(r) for r in result.rows]
    figures = {f.path for f in client.list_artifacts(result.parent_run_id, "comparison")}
    for split in ("valid", "test"):
        assert f"comparison/{split}_missing_all_mae.png" in figures
    printed = format_result(result, config.tracking.experiment).splitlines()
    line = next(ln for ln in printed if ln.split()[:1] == ["qa_moe-no-gate"])
    gate_off = parent["compare/test/qa_moe-no-gate/spectrum_mae"]
    assert line.split()[3] == f"{gate_off:.4f}"  # model, valid MAE, excess, test MAE, excess
