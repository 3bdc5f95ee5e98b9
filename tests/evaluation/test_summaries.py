"""Robustness summaries and the search objective, against numbers computed by hand here."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from robustmsa.evaluation.summaries import (
    curves,
    effective_robustness_summary,
    spectrum_score,
    summarize,
)

LEVELS = [round(0.1 * i, 1) for i in range(11)]


def _row(protocol, mods, level, metric, value):
    return {
        "protocol": protocol,
        "modalities": mods,
        "level": level,
        "metric": metric,
        "value": value,
        "n": 10,
    }


def _curve(protocol, mods, metric, levels, values):
    return [_row(protocol, mods, lv, metric, v) for lv, v in zip(levels, values, strict=True)]


HAND_TABLE = [
    _row("clean", "all", 0.0, "mae", 1.0),
    _row("clean", "all", 0.0, "corr", 0.9),
    *_curve("missing", "all", "mae", [0.0, 0.1, 0.2], [1.0, 2.0, 4.0]),
    *_curve("missing", "all", "corr", [0.0, 0.1, 0.2], [0.9, 0.5, 0.1]),
    *_curve("noise", "text", "mae", [0.0, 0.1], [1.0, 3.0]),
]


# --------------------------------------------------------------------------- curves


def test_summarize_names_and_emt_dlfr_trapezoid():
    out = summarize(HAND_TABLE)
    # EMT-DLFR AUILC: sum over consecutive levels of (m_i + m_{i+1}) / 2 * 0.1, not normalised.
    assert out == pytest.approx(
        {
            "robust/missing/all/auilc_mae": 0.15 + 0.30,
            "robust/missing/all/mean_mae": 2.25,
            "robust/missing/all/ratemean_mae": (1.0 + 2.0 + 4.0) / 3,
            "robust/missing/all/worst_mae": 4.0,
            "robust/missing/all/auilc_corr": (0.9 + 0.5) / 2 * 0.1 + (0.5 + 0.1) / 2 * 0.1,
            "robust/missing/all/mean_corr": ((0.9 + 0.5) / 2 + (0.5 + 0.1) / 2) / 2,
            "robust/missing/all/ratemean_corr": (0.9 + 0.5 + 0.1) / 3,
            "robust/missing/all/worst_corr": 0.1,
            "robust/noise/text/auilc_mae": (1.0 + 3.0) / 2 * 0.1,
            "robust/noise/text/mean_mae": 2.0,
            "robust/noise/text/ratemean_mae": 2.0,
            "robust/noise/text/worst_mae": 3.0,
        }
    )
    # Single-level curves (clean) have no summary.
    assert not any(k.startswith("robust/clean/") for k in out)


@pytest.mark.parametrize(("a", "b"), [(1.2, 0.8), (0.7, -0.4)])
def test_linear_curve_on_the_default_levels(a, b):
    # m(t) = a + b t on 0.0..1.0: the trapezoid is exact, AUILC = a + b / 2 over width 1;
    # LNLN's mean over the rates 0.0..0.9 is a + 0.45 b; the worst MAE is the larger end, the
    # worst accuracy the smaller one.
    rows = _curve("missing", "all", "mae", LEVELS, [a + b * t for t in LEVELS])
    rows += _curve("missing", "all", "acc7", LEVELS, [a + b * t for t in LEVELS])
    out = summarize(rows)
    for metric in ("mae", "acc7"):
        assert out[f"robust/missing/all/auilc_{metric}"] == pytest.approx(a + b / 2)
        assert out[f"robust/missing/all/mean_{metric}"] == pytest.approx(a + b / 2)
        assert out[f"robust/missing/all/ratemean_{metric}"] == pytest.approx(a + 0.45 * b)
    assert out["robust/missing/all/worst_mae"] == pytest.approx(max(a, a + b))
    assert out["robust/missing/all/worst_acc7"] == pytest.approx(min(a, a + b))


def test_eleven_level_curve_is_emt_dlfr_loop():
    values = [(lv - 0.5) ** 2 + 0.1 * np.sin(7 * lv) for lv in LEVELS]
    # EMT-DLFR's code: a loop over consecutive rates, step 0.1.
    expected = 0.0
    for i in range(len(values) - 1):
        expected += (values[i] + values[i + 1]) / 2 * 0.1
    out = summarize(_curve("joint", "vision", "mae", LEVELS, values))
    assert out["robust/joint/vision/auilc_mae"] == pytest.approx(expected, rel=1e-12)
    assert out["robust/joint/vision/mean_mae"] == pytest.approx(expected / 1.0, rel=1e-12)
    assert out["robust/joint/vision/ratemean_mae"] == pytest.approx(np.mean(values[:10]))
    assert out["robust/joint/vision/worst_mae"] == max(values)


def test_chsims_range_is_not_width_normalised():
    levels = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    values = [0.4, 0.45, 0.5, 0.6, 0.7, 0.9]
    area = sum((values[i] + values[i + 1]) / 2 * 0.1 for i in range(5))
    out = summarize(_curve("missing", "all", "mae", levels, values))
    assert out["robust/missing/all/auilc_mae"] == pytest.approx(area)
    assert out["robust/missing/all/mean_mae"] == pytest.approx(area / 0.5)
    assert out["robust/missing/all/ratemean_mae"] == pytest.approx(np.mean(values))


def test_uneven_levels_use_each_gap():
    levels, values = [0.0, 0.3, 0.6, 1.0], [1.0, 2.0, 2.0, 5.0]
    area = (1.0 + 2.0) / 2 * 0.3 + (2.0 + 2.0) / 2 * 0.3 + (2.0 + 5.0) / 2 * 0.4
    out = summarize(_curve("noise", "all", "mae", levels, values))
    assert out["robust/noise/all/auilc_mae"] == pytest.approx(area)
    assert out["robust/noise/all/mean_mae"] == pytest.approx(area / 1.0)
    assert out["robust/noise/all/ratemean_mae"] == pytest.approx((1.0 + 2.0 + 2.0) / 3)


def test_grid_rows_are_curves_with_their_own_step():
    levels, values = [0.0, 0.25, 0.5, 0.75, 1.0], [1.0, 1.5, 2.5, 3.0, 3.0]
    area = sum((values[i] + values[i + 1]) / 2 * 0.25 for i in range(4))
    out = summarize(_curve("grid", "text/eta=0.25", "mae", levels, values))
    assert out["robust/grid/text/eta=0.25/auilc_mae"] == pytest.approx(area)
    assert out["robust/grid/text/eta=0.25/mean_mae"] == pytest.approx(area)


def test_curves_order_by_level_even_if_shuffled():
    rows = _curve("noise", "all", "mae", LEVELS[:6], [10 * lv + 1 for lv in LEVELS[:6]])
    rows += _curve("noise", "all", "corr", LEVELS[:3], [-lv for lv in LEVELS[:3]])
    rows += _curve("missing", "text", "mae", [0.0, 0.5, 1.0], [5.0, 4.5, 4.0])
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    got = curves(shuffled, "mae")
    assert set(got) == {("noise", "all"), ("missing", "text")}
    assert got[("noise", "all")] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert got[("missing", "text")] == pytest.approx([5.0, 4.5, 4.0])
    assert curves(shuffled, "corr") == {("noise", "all"): pytest.approx([0.0, -0.1, -0.2])}
    assert curves(shuffled, "acc7") == {}
    assert summarize(shuffled) == summarize(rows)


# --------------------------------------------------------------------------- point sets

PATTERN_MAE = {
    "text": 1.1,
    "audio": 1.4,
    "vision": 1.3,
    "text+audio": 0.9,
    "text+vision": 0.95,
    "audio+vision": 1.25,
    "text+audio+vision": 0.8,
}
PATTERN_ACC = {k: 1.0 - v / 2 for k, v in PATTERN_MAE.items()}
RANDOM_MAE = [1.0, 1.3, 0.9]


def _sets_table():
    rows = [_row("patterns", k, 0.0, "mae", v) for k, v in PATTERN_MAE.items()]
    rows += [_row("patterns", k, 0.0, "acc2_has0", v) for k, v in PATTERN_ACC.items()]
    rows += [_row("random", f"draw{k}", 0.0, "mae", v) for k, v in enumerate(RANDOM_MAE)]
    return rows


def test_point_set_summaries():
    out = summarize(_sets_table())
    assert out == pytest.approx(
        {
            "robust/patterns/mean_mae": sum(PATTERN_MAE.values()) / 7,
            "robust/patterns/worst_mae": 1.4,  # audio alone
            "robust/patterns/mean_acc2_has0": sum(PATTERN_ACC.values()) / 7,
            "robust/patterns/worst_acc2_has0": 1.0 - 1.4 / 2,
            "robust/random/mean_mae": sum(RANDOM_MAE) / 3,
            "robust/random/worst_mae": 1.3,
        }
    )


def test_nan_propagates_to_summaries():
    rows = _curve("missing", "all", "acc2_non0", [0.0, 0.1, 0.2], [0.7, float("nan"), 0.6])
    out = summarize(rows)
    assert np.isnan(out["robust/missing/all/auilc_acc2_non0"])
    assert np.isnan(out["robust/missing/all/worst_acc2_non0"])


# --------------------------------------------------------------------------- effective robustness


def test_effective_robustness_against_reference():
    levels = [0.0, 0.1, 0.2]
    ours = _curve("missing", "all", "acc2_has0", levels, [0.8, 0.7, 0.5])
    ours += _curve("missing", "text", "acc2_has0", levels, [0.8, 0.8, 0.75])
    ours += _curve("noise", "all", "mae", levels, [0.7, 0.9, 1.2])
    ours += [_row("clean", "all", 0.0, "mae", 0.7), *_sets_table()]
    ref = _curve("missing", "all", "acc2_has0", levels, [0.8, 0.6, 0.2])
    ref += _curve("noise", "all", "mae", levels, [0.75, 0.8, 1.0])
    ref += [_row("clean", "all", 0.0, "mae", 0.75), *_sets_table()]
    out = effective_robustness_summary(ours, ref)
    # sum_i (a_i - a_0) - sum_i (LF_i - LF_0); only curves of both tables (not missing/text,
    # not the single points).
    assert out == pytest.approx(
        {
            "robust/missing/all/effective_acc2_has0": (-0.1 - 0.3) - (-0.2 - 0.6),
            "robust/noise/all/effective_mae": (0.2 + 0.5) - (0.05 + 0.25),
        }
    )
    assert effective_robustness_summary(ref, ref) == {
        "robust/missing/all/effective_acc2_has0": 0.0,
        "robust/noise/all/effective_mae": 0.0,
    }


def test_effective_robustness_needs_the_same_levels():
    ours = _curve("missing", "all", "mae", [0.0, 0.1, 0.2], [1.0, 1.1, 1.2])
    ref = _curve("missing", "all", "mae", [0.0, 0.1, 0.3], [1.0, 1.1, 1.2])
    with pytest.raises(ValueError, match=r"missing/all mae.*0\.3"):
        effective_robustness_summary(ours, ref)


# --------------------------------------------------------------------------- spectrum_score


def test_spectrum_score_hand_computed():
    # Width-normalised trapezoid mean per MAE curve, one curve per protocol here:
    #   clean: one level -> 1.0
    #   missing/all: ((1+2)/2*0.1 + (2+4)/2*0.1) / 0.2 = (0.15 + 0.30) / 0.2 = 2.25
    #   noise/text: ((1+3)/2*0.1) / 0.1 = 2.0
    # corr rows are ignored.
    assert spectrum_score(HAND_TABLE) == pytest.approx((1.0 + 2.25 + 2.0) / 3)


def test_spectrum_score_weights_protocols_equally():
    rows = [_row("clean", "all", 0.0, "mae", 1.0)]
    rows += _curve("missing", "all", "mae", LEVELS, [2.0] * 11)
    rows += _curve("missing", "text", "mae", LEVELS, LEVELS)  # trapezoid mean 0.5
    rows += _sets_table()
    missing = (2.0 + 0.5) / 2
    patterns = sum(PATTERN_MAE.values()) / 7
    rand = sum(RANDOM_MAE) / 3
    expected = (1.0 + missing + patterns + rand) / 4
    assert spectrum_score(rows) == pytest.approx(expected)
    # Not the plain mean over the 13 curves and points, where seven patterns would dominate.
    per_curve = [1.0, 2.0, 0.5, *PATTERN_MAE.values(), *RANDOM_MAE]
    assert spectrum_score(rows) != pytest.approx(sum(per_curve) / len(per_curve))
    # Adding a scope to a protocol reweights within that protocol only.
    more = rows + _curve("missing", "audio", "mae", LEVELS, [3.5] * 11)
    assert spectrum_score(more) == pytest.approx((1.0 + 2.0 + patterns + rand) / 4)


def test_spectrum_score_independent_of_row_order_and_container():
    rows = list(HAND_TABLE) + _sets_table()
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    assert spectrum_score(shuffled) == spectrum_score(rows)
    assert spectrum_score(pd.DataFrame(shuffled)) == spectrum_score(rows)
    assert summarize(pd.DataFrame(rows)) == summarize(rows)


def test_spectrum_score_needs_mae_rows():
    with pytest.raises(ValueError, match="mae"):
        spectrum_score([r for r in HAND_TABLE if r["metric"] != "mae"])


# --------------------------------------------------------------------------- bad tables


def test_repeated_row_is_rejected():
    rows = [*HAND_TABLE, _row("missing", "all", 0.1, "mae", 2.5)]
    with pytest.raises(ValueError, match=r"'missing'.*'all'.*0\.1.*'mae'"):
        summarize(rows)


def test_row_without_a_field_is_rejected():
    rows = [{k: v for k, v in r.items() if k != "level"} for r in HAND_TABLE]
    with pytest.raises(ValueError, match="level"):
        spectrum_score(rows)
