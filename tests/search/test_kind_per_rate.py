"""Study kinds per_rate and one_checkpoint_for_all: variants, table and summaries, and the
whole study kind embedded (local Ray, sqlite MLflow)."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from paths import REPO
from robustmsa.config import from_dict, load
from robustmsa.errors import ConfigError
from robustmsa.search.kinds import one_checkpoint_for_all
from robustmsa.search.kinds.per_rate import (
    ONE_CHECKPOINT,
    ORACLE,
    PER_RATE,
    curve_summaries,
    curve_table,
    specialist_role,
    specialist_variants,
)
from robustmsa.search.study import run_study
from robustmsa.search.trial import ROLE_TAG

STUDY_YAML = REPO / "studies" / "configs" / "one_checkpoint_for_all.yaml"


def _rows(curve: dict[float, float], protocol="missing", modalities="all"):
    return [
        {"protocol": protocol, "modalities": modalities, "level": lv, "metric": "mae", "value": v}
        for lv, v in curve.items()
    ]


def test_variants_are_one_specialist_per_level_and_the_one_checkpoint():
    config = load(STUDY_YAML, ["one_checkpoint_for_all.levels=[0.0, 0.5, 1.0]"])
    variants = specialist_variants(config)
    assert [v.role for v in variants] == ["rate-0.00", "rate-0.50", "rate-1.00"]
    assert variants[1].overrides == {"spectrum.sampler": "fixed", "spectrum.fixed_missing": 0.5}
    assert one_checkpoint_for_all.KIND.trial_count(config) == 4  # and the one checkpoint
    raw = {
        "study": {"kind": "per_rate"},
        "per_rate": {"axis": "noise"},
        "spectrum": {"protocols": ["noise@all"]},
    }
    per_rate = from_dict(raw)
    assert specialist_variants(per_rate)[3].overrides["spectrum.fixed_noise"] == 0.3


def test_the_compared_curve_must_be_in_the_protocols_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"spectrum\.protocols: .*'missing@all'.* must be listed"):
        load(STUDY_YAML, ["spectrum.protocols=[clean]"])


def test_a_section_of_another_kind_is_refused_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"^.*per_rate: the section of study kind 'per_rate', "):
        load(STUDY_YAML, ["per_rate.levels=[0.5]"])


def test_table_takes_each_specialist_at_its_own_level():
    rows = {
        specialist_role(0.0): _rows({0.0: 0.5, 0.5: 0.9, 1.0: 1.4}),
        specialist_role(0.5): _rows({0.0: 0.7, 0.5: 0.8, 1.0: 1.2}),
        specialist_role(1.0): _rows({0.0: 1.3, 0.5: 1.3, 1.0: 1.1})
        + _rows({1.0: 9.0}, protocol="noise"),  # another curve: ignored
        ONE_CHECKPOINT: _rows({0.0: 0.6, 0.5: 0.85, 1.0: 1.15}),
    }
    oracle = _rows({0.0: 0.4, 0.5: 0.7, 1.0: 1.0})
    table = curve_table(rows, "missing", [0.0, 0.5, 1.0], oracle)
    got = {(r.model, r.level): r.value for r in table}
    assert {k: v for k, v in got.items() if k[0] == PER_RATE} == {
        (PER_RATE, 0.0): 0.5,
        (PER_RATE, 0.5): 0.8,
        (PER_RATE, 1.0): 1.1,
    }
    assert got[(ONE_CHECKPOINT, 0.5)] == 0.85 and got[(ORACLE, 1.0)] == 1.0
    summaries = curve_summaries(table)
    # Trapezoid with the levels' own spacing (0.5): (0.5 + 0.8) / 2 * 0.5 + (0.8 + 1.1) / 2 * 0.5
    assert summaries["compare/per_rate/auilc_mae"] == pytest.approx(0.8)
    assert summaries["compare/per_rate/mean_mae"] == pytest.approx(0.8)
    assert summaries["compare/oracle/mean_mae"] == pytest.approx((0.55 + 0.85) / 2)


def test_table_fails_when_a_specialist_lacks_its_point():
    rows = {specialist_role(0.5): _rows({0.0: 0.7})}
    with pytest.raises(ValueError, match=r"rate-0\.50: no missing@all point at level 0\.5"):
        curve_table(rows, "missing", [0.5])


def test_one_checkpoint_for_all_study_logs_the_comparison(tmp_path, local_ray):
    overrides = {
        "data.preset": "tiny",
        "data.cache_dir": str(tmp_path / "data"),
        "training.epochs": 1,
        "one_checkpoint_for_all.levels": "[0.0, 1.0]",
        "model.params.hidden": 16,
        "model.params.expert_hidden": 32,
    }
    config = load(STUDY_YAML, [f"{k}={v}" for k, v in overrides.items()])
    result = run_study(config, root=tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    roles = {c.data.tags[ROLE_TAG]: c for c in children}
    assert set(roles) == {"reference", ONE_CHECKPOINT, "rate-0.00", "rate-1.00"}
    assert roles["reference"].data.params["model.name"] == "late_fusion"
    assert roles["rate-1.00"].data.params["spectrum.sampler"] == "fixed"
    assert float(roles["rate-1.00"].data.params["spectrum.fixed_missing"]) == 1.0
    assert roles[ONE_CHECKPOINT].data.params["spectrum.sampler"] == "continuous"
    # Effective robustness against the reference on every other run.
    for role in (ONE_CHECKPOINT, "rate-0.00"):
        assert "robust/missing/all/effective_mae" in roles[role].data.metrics
    for model in (PER_RATE, ONE_CHECKPOINT, ORACLE):
        history = client.get_metric_history(result.parent_run_id, f"compare/{model}/mae")
        assert sorted(m.step for m in history) == [0, 100]
    # The per-rate value at 1.0 is the 1.0-specialist's own validation point.
    spec = roles["rate-1.00"]
    steps = {
        m.step: m.value
        for m in client.get_metric_history(spec.info.run_id, "spectrum/missing/all/mae")
    }
    per_rate = {
        m.step: m.value
        for m in client.get_metric_history(parent.info.run_id, "compare/per_rate/mae")
    }
    assert per_rate[100] == pytest.approx(steps[100])
    local = client.download_artifacts(
        result.parent_run_id, "comparison/comparison_valid.parquet", str(tmp_path)
    )
    assert pq.read_table(local).to_pylist() == [dataclasses.asdict(r) for r in result.rows]
