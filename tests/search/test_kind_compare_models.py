"""Study kind compare_models: its config and table (the whole study kind, embedded, is
tests/integration/test_comparison_study.py, on the session's smoke comparison)."""

from __future__ import annotations

import pytest
from paths import REPO
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
            "compare_models.models.constant={name: qa_moe}",
            r"compare_models\.models\.constant: a role is",
        ),
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
