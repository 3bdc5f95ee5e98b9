"""`robustmsa.search.reproduce` without Ray: comparing tables, configs that no longer load,
and the confirm study's statistics."""

from __future__ import annotations

import math

import pytest
from paths import REPO
from robustmsa.config import load
from robustmsa.errors import ConfigError
from robustmsa.search.kinds.confirm import confirm_table, interval
from robustmsa.search.reproduce import LoggedTrial, compare_rows, confirm_config, logged_config

ROW = {"protocol": "missing", "modalities": "all", "level": 0.5, "metric": "mae", "value": 0.75}


def test_compare_rows_finds_the_smallest_difference():
    same = [dict(ROW), {**ROW, "level": 1.0, "value": float("nan")}]
    assert compare_rows(same, [dict(r) for r in same]) == (0, 0.0, None)
    nudged = [dict(same[0], value=math.nextafter(0.75, 1.0)), same[1]]
    differing, largest, first = compare_rows(same, nudged)
    assert differing == 1 and 0 < largest < 1e-15 and first.startswith("missing/all/0.5/mae")
    assert compare_rows(same, same[:1])[1] == math.inf


def _trial(raw) -> LoggedTrial:
    return LoggedTrial("abc123", "1", raw, {"epoch": 2}, [ROW])


def test_a_config_whose_model_was_renamed_names_the_run_and_key():
    raw = load(REPO / "studies" / "configs" / "qa_moe_search.yaml").to_dict()
    raw["model"]["name"] = "qa_moe_v0"
    with pytest.raises(ConfigError, match=r"^run abc123: its checkpoint/config.yaml: model\.name"):
        logged_config(_trial(raw))


def test_the_confirm_config_is_the_trials_config_with_seeds():
    raw = load(REPO / "studies" / "configs" / "qa_moe_search.yaml").to_dict()
    config = confirm_config(_trial(raw), 3, "sqlite:///x.db", "exp")
    assert config.study.kind == "confirm" and config.kind_section.seeds == 3
    assert config.kind_section.source_run_id == "abc123"
    assert config.model.name == "qa_moe" and "search" not in config.to_dict()


def test_confirm_statistics():
    mean, std, low, high = interval([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    # t(0.975, 2 d.o.f.) = 4.3027
    assert high - mean == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert low == pytest.approx(2 * mean - high)
    rows = confirm_table(
        [{"spectrum_score": 0.8}, {"spectrum_score": 0.9}],
        [{"spectrum_score": 1.0}, {"spectrum_score": 1.2}],
        "valid",
    )
    diff = next(r for r in rows if r.model == "difference")
    assert diff.mean == pytest.approx(-0.25) and diff.n == 2
    with pytest.raises(ValueError, match="paired seeds"):
        confirm_table([{"spectrum_score": 1.0}], [{"spectrum_score": 1.0}], "valid")
