"""Tests for robustmsa.evaluation.metrics (definitions: docs/references.md "Metrics").

Expected values are worked out by hand in the comments; sklearn appears only as an independent
cross-check (randomised F1 and a transcription of MMSA's own metric code).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from robustmsa.evaluation.metrics import (
    auilc,
    effective_robustness,
    mean_over_curve,
    regression_metrics,
    sims_metrics,
    weighted_f1,
)
from sklearn.metrics import accuracy_score, f1_score

REG_KEYS = {"mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7"}
SIMS_KEYS = {"mae", "corr", "acc2", "acc3", "acc5", "f1"}


# --------------------------------------------------------------------------- regression


def test_regression_zero_labels_has0_vs_non0():
    t = [0.0, 1.0, -1.0, 2.0, -0.5, 0.0]
    p = [0.0, 0.5, 0.2, 1.0, -0.6, -0.3]
    m = regression_metrics(p, t)
    assert set(m) == REG_KEYS
    assert all(isinstance(v, float) for v in m.values())
    # MAE: |0|+|0.5-1|+|0.2+1|+|1-2|+|-0.6+0.5|+|-0.3| = 0+0.5+1.2+1+0.1+0.3 = 3.1; /6
    assert m["mae"] == pytest.approx(3.1 / 6)
    # Has0: t>=0 = [T,T,F,T,F,T], p>=0 = [T,T,T,T,F,F] -> right at 0,1,3,4 -> 4/6
    assert m["acc2_has0"] == pytest.approx(4 / 6)
    # Has0 F1: class T (support 4): tp 3 (0,1,3), fp 1 (2), fn 1 (5) -> 6/8 = 0.75
    #          class F (support 2): tp 1 (4), fp 1 (5), fn 1 (2)      -> 2/4 = 0.5
    #          weighted (4*0.75 + 2*0.5)/6 = 4/6
    assert m["f1_has0"] == pytest.approx(4 / 6)
    # Non0 drops idx 0 and 5: t = [1,-1,2,-0.5], p = [0.5,0.2,1.0,-0.6]
    # t>0 = [T,F,T,F], p>0 = [T,T,T,F] -> 3/4
    assert m["acc2_non0"] == pytest.approx(3 / 4)
    # Non0 F1: class T (support 2): tp 2, fp 1, fn 0 -> 4/5
    #          class F (support 2): tp 1, fp 0, fn 1 -> 2/3
    #          weighted (2*4/5 + 2*2/3)/4 = 11/15
    assert m["f1_non0"] == pytest.approx(11 / 15)
    # rounding: p -> [0,0,0,1,-1,0], t -> [0,1,-1,2,0,0] (round(-0.5) = -0.0); right at 0, 5
    assert m["acc5"] == pytest.approx(2 / 6)
    assert m["acc7"] == pytest.approx(2 / 6)


def test_prediction_exactly_zero_non_negative_for_has0_non_positive_for_non0():
    t = [1.0, 1.0, -1.0]
    p = [0.0, 0.0, 0.0]
    m = regression_metrics(p, t)
    # Has0: t>=0 = [T,T,F], p>=0 = [T,T,T] -> 2/3
    assert m["acc2_has0"] == pytest.approx(2 / 3)
    # Has0 F1: class T (support 2): tp 2, fp 1, fn 0 -> 4/5; class F (support 1): tp 0 -> 0
    #          weighted 2*0.8/3 = 8/15
    assert m["f1_has0"] == pytest.approx(8 / 15)
    # Non0: t>0 = [T,T,F], p>0 = [F,F,F] -> 1/3
    assert m["acc2_non0"] == pytest.approx(1 / 3)
    # Non0 F1: class T (support 2): tp 0 -> 0; class F (support 1): tp 1, fp 2, fn 0 -> 2/4
    #          weighted 0.5/3 = 1/6
    assert m["f1_non0"] == pytest.approx(1 / 6)
    # constant predictions: Pearson undefined (np.corrcoef gives nan) -> 0.0 by convention
    assert m["corr"] == 0.0


def test_all_labels_zero_gives_nan_non0():
    m = regression_metrics([1.0, -1.0, 0.0], [0.0, 0.0, 0.0])
    assert math.isnan(m["acc2_non0"])
    assert math.isnan(m["f1_non0"])
    # Has0: all labels T; p>=0 = [T,F,T] -> 2/3. F1: class T (support 3): tp 2, fp 0, fn 1
    # -> 4/5; class F has no true samples -> weight 0; weighted 0.8
    assert m["acc2_has0"] == pytest.approx(2 / 3)
    assert m["f1_has0"] == pytest.approx(0.8)
    assert m["corr"] == 0.0  # constant labels


def test_rounding_ties_and_clipping():
    p = [0.5, 1.5, -2.5, 2.5, 3.7, -4.0, -1.5, -2.6, 2.5, -0.5]
    t = [0.0, 2.0, -2.0, 2.0, 3.0, -3.0, -2.0, -2.0, 3.0, -1.0]
    m = regression_metrics(p, t)
    # Acc-5, clip +-2 then round half to even:
    #   p -> [0.5,1.5,-2,2,2,-2,-1.5,-2,2,-0.5] -> [0,2,-2,2,2,-2,-2,-2,2,0]
    #   t -> [0,2,-2,2,2,-2,-2,-2,2,-1]; only the last differs -> 9/10
    assert m["acc5"] == pytest.approx(0.9)
    # Acc-7, clip +-3 then round half to even:
    #   p -> [0.5,1.5,-2.5,2.5,3,-3,-1.5,-2.6,2.5,-0.5] -> [0,2,-2,2,3,-3,-2,-3,2,0]
    #   t -> [0,2,-2,2,3,-3,-2,-2,3,-1]; idx 7, 8, 9 differ -> 7/10
    #   (round-half-away-from-zero would give p -> [1,2,-3,3,3,-3,-2,-3,3,-1] -> 6/10)
    assert m["acc7"] == pytest.approx(0.7)
    # MAE unclipped: 0.5*7 + 0.7 (3.7 vs 3) + 1.0 (-4 vs -3) + 0.6 (-2.6 vs -2) = 5.8; /10
    # (clipping to +-3 first would give 4.8/10)
    assert m["mae"] == pytest.approx(0.58)


def test_pearson_hand_case_and_single_sample():
    # centred p = [-1.5,-.5,.5,1.5], centred t = [-1.5,.5,-.5,1.5]
    # dot = 2.25-0.25-0.25+2.25 = 4; sum of squares 5 each -> r = 4/5
    assert regression_metrics([1, 2, 3, 4], [1, 3, 2, 4])["corr"] == pytest.approx(0.8)
    assert regression_metrics([1, 2, 3], [3, 2, 1])["corr"] == pytest.approx(-1.0)
    one = regression_metrics([0.4], [-1.0])
    assert one["corr"] == 0.0
    assert one["mae"] == pytest.approx(1.4)
    # p>=0 True, t>=0 False -> 0; p round 0, t round -1 -> 0
    assert one["acc2_has0"] == 0.0 and one["acc7"] == 0.0


def _mmsa_mosi_reference(test_preds: np.ndarray, test_truth: np.ndarray) -> dict[str, float]:
    """Transcription of MMSA MetricsTop.__eval_mosi_regression (torch steps dropped)."""
    test_preds_a7 = np.clip(test_preds, a_min=-3.0, a_max=3.0)
    test_truth_a7 = np.clip(test_truth, a_min=-3.0, a_max=3.0)
    test_preds_a5 = np.clip(test_preds, a_min=-2.0, a_max=2.0)
    test_truth_a5 = np.clip(test_truth, a_min=-2.0, a_max=2.0)
    mae = np.mean(np.absolute(test_preds - test_truth)).astype(np.float64)
    corr = np.corrcoef(test_preds, test_truth)[0][1]
    mult_a7 = np.sum(np.round(test_preds_a7) == np.round(test_truth_a7)) / len(test_truth_a7)
    mult_a5 = np.sum(np.round(test_preds_a5) == np.round(test_truth_a5)) / len(test_truth_a5)
    non_zeros = np.array([i for i, e in enumerate(test_truth) if e != 0])
    non_zeros_binary_truth = test_truth[non_zeros] > 0
    non_zeros_binary_preds = test_preds[non_zeros] > 0
    non_zeros_acc2 = accuracy_score(non_zeros_binary_preds, non_zeros_binary_truth)
    non_zeros_f1 = f1_score(non_zeros_binary_truth, non_zeros_binary_preds, average="weighted")
    binary_truth = test_truth >= 0
    binary_preds = test_preds >= 0
    acc2 = accuracy_score(binary_preds, binary_truth)
    f_score = f1_score(binary_truth, binary_preds, average="weighted")
    return {
        "acc2_has0": acc2,
        "f1_has0": f_score,
        "acc2_non0": non_zeros_acc2,
        "f1_non0": non_zeros_f1,
        "acc7": mult_a7,
        "acc5": mult_a5,
        "mae": mae,
        "corr": corr,
    }


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("seed", range(20))
def test_regression_matches_mmsa_transcription(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 60))
    # MOSI-like labels: multiples of 1/3 (many exact zeros), predictions on a 0.5 grid (ties)
    # or continuous, some beyond +-3
    t = (rng.integers(-9, 10, n) / 3.0).astype(np.float32)
    if seed % 2:
        p = (rng.integers(-8, 9, n) * 0.5).astype(np.float32)
    else:
        p = rng.normal(0, 2, n).astype(np.float32)
    t[0] = 1.0  # keep at least one non-zero label so MMSA's Non0 path is defined
    ref = _mmsa_mosi_reference(p, t)
    got = regression_metrics(p, t)
    for key, expected in ref.items():
        if key == "corr" and not np.isfinite(expected):
            assert got[key] == 0.0
        else:
            assert got[key] == pytest.approx(float(expected), rel=1e-5, abs=1e-6), key


# --------------------------------------------------------------------------- weighted F1


def test_weighted_f1_unbalanced_multiclass_by_hand():
    true = [0, 0, 0, 0, 0, 1, 1, 2]
    pred = [0, 0, 0, 1, 2, 1, 0, 1]
    # class 0 (support 5): tp 3 (0,1,2), fp 1 (6), fn 2 (3,4) -> 6/9 = 2/3
    # class 1 (support 2): tp 1 (5), fp 2 (3,7), fn 1 (6)      -> 2/5
    # class 2 (support 1): tp 0                                -> 0
    # weighted (5*2/3 + 2*2/5 + 1*0)/8 = (50/15 + 12/15)/8 = 31/60
    assert weighted_f1(true, pred) == pytest.approx(31 / 60)
    # swapped arguments weight by predicted counts (4, 3, 1): (8/3 + 6/5)/8 = 29/60
    assert weighted_f1(pred, true) == pytest.approx(29 / 60)


def test_weighted_f1_class_only_in_predictions_has_zero_weight():
    # class 0 (support 2): tp 1, fp 0, fn 1 -> 2/3; class 1 (support 1): tp 1 -> 1;
    # class 2 never true -> weight 0; weighted (2*2/3 + 1)/3 = 7/9
    assert weighted_f1([0, 0, 1], [0, 2, 1]) == pytest.approx(7 / 9)
    assert weighted_f1([True, True], [True, True]) == 1.0
    assert weighted_f1([True, True], [False, False]) == 0.0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("seed", range(30))
def test_weighted_f1_matches_sklearn_random(seed):
    # sklearn's UndefinedMetricWarning marks its zero-division value 0, which is what we expect
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(1, 40))
    k = int(rng.integers(2, 6))
    true = rng.integers(0, k, n)
    # skew predictions (and allow an extra class k) so some classes are missing on one side
    pred = np.where(rng.random(n) < 0.3, 0, rng.integers(0, k + 1, n))
    expected = f1_score(true, pred, average="weighted")
    assert weighted_f1(true, pred) == pytest.approx(expected, abs=1e-12)
    tb, pb = true > k // 2, pred > k // 2
    expected_bin = f1_score(tb, pb, average="weighted")
    assert weighted_f1(tb, pb) == pytest.approx(expected_bin, abs=1e-12)


# --------------------------------------------------------------------------- CH-SIMS


def test_sims_bins_boundaries_and_clipping():
    p = [0.25, 0.05, -0.1, 0.1, -0.7, 0.75, 1.5, -2.0, 0.3, 0.0, -0.5]
    t = [0.2, 0.0, -0.1, 0.1, -0.8, 0.6, 1.0, -1.0, -0.3, -0.2, -0.4]
    m = sims_metrics(p, t)
    assert set(m) == SIMS_KEYS
    # clipped p = [0.25,0.05,-0.1,0.1,-0.7,0.75,1.0,-1.0,0.3,0.0,-0.5]
    # MAE on clipped: .05+.05+0+0+.1+.15+0+0+.6+.2+.1 = 1.25; /11 (unclipped would be 2.75/11)
    assert m["mae"] == pytest.approx(1.25 / 11)
    # Acc-2, (lo,hi] with edges [-1.01, 0, 1.01]; exactly 0 is class 0:
    #   p2 = [1,1,0,1,0,1,1,0,1,0,0], t2 = [1,0,0,1,0,1,1,0,0,0,0]; wrong at 1, 8 -> 9/11
    assert m["acc2"] == pytest.approx(9 / 11)
    # F1: class 0 (support 7): tp 5, fp 0, fn 2 -> 10/12; class 1 (support 4): tp 4, fp 2,
    #     fn 0 -> 8/10; weighted (7*5/6 + 4*4/5)/11 = (175/30 + 96/30)/11 = 271/330
    assert m["f1"] == pytest.approx(271 / 330)
    # Acc-3, edges [-1.01,-0.1,0.1,1.01]: -0.1 -> 0, 0.1 -> 1 (neutral), 0 -> 1
    #   p3 = [2,1,0,1,0,2,2,0,2,1,0], t3 = [2,1,0,1,0,2,2,0,0,0,0]; wrong at 8, 9 -> 9/11
    assert m["acc3"] == pytest.approx(9 / 11)
    # Acc-5, edges [-1.01,-0.7,-0.1,0.1,0.7,1.01]: -0.1 -> 1 ((-0.7,-0.1]), -0.7 -> 0,
    #   0.75 -> 4, 0.6 -> 3:
    #   p5 = [3,2,1,2,0,4,4,0,3,2,1], t5 = [3,2,1,2,0,3,4,0,1,1,1]; wrong at 5, 8, 9 -> 8/11
    assert m["acc5"] == pytest.approx(8 / 11)
    pc = np.array([0.25, 0.05, -0.1, 0.1, -0.7, 0.75, 1.0, -1.0, 0.3, 0.0, -0.5])
    assert m["corr"] == pytest.approx(np.corrcoef(pc, np.array(t))[0, 1])


def test_sims_float32_edge_compared_in_input_dtype():
    # float32(0.1) is slightly above float64 0.1; MMSA compares float32 arrays with the Python
    # float edge in float32, so 0.1 stays neutral (Acc-3 class 1, Acc-5 class 2) like 0.0.
    p = np.array([0.1, 0.5], dtype=np.float32)
    t = np.array([0.0, 0.5], dtype=np.float32)
    m = sims_metrics(p, t)
    assert m["acc3"] == 1.0
    assert m["acc5"] == 1.0
    assert m["acc2"] == 0.5  # 0.1 is positive, 0.0 is not


def _mmsa_sims_reference(test_preds: np.ndarray, test_truth: np.ndarray) -> dict[str, float]:
    """Transcription of MMSA MetricsTop.__eval_sims_regression (torch steps dropped)."""
    test_preds = np.clip(test_preds, a_min=-1.0, a_max=1.0)
    test_truth = np.clip(test_truth, a_min=-1.0, a_max=1.0)
    out = {}
    for name, ms in (
        ("acc2", [-1.01, 0.0, 1.01]),
        ("acc3", [-1.01, -0.1, 0.1, 1.01]),
        ("acc5", [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]),
    ):
        pa, ta = test_preds.copy(), test_truth.copy()
        for i in range(len(ms) - 1):
            pa[np.logical_and(test_preds > ms[i], test_preds <= ms[i + 1])] = i
            ta[np.logical_and(test_truth > ms[i], test_truth <= ms[i + 1])] = i
        out[name] = np.sum(pa == ta) / len(ta)
        if name == "acc2":
            out["f1"] = f1_score(ta, pa, average="weighted")
    out["mae"] = np.mean(np.absolute(test_preds - test_truth))
    out["corr"] = np.corrcoef(test_preds, test_truth)[0][1]
    return out


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("seed", range(20))
def test_sims_matches_mmsa_transcription(seed):
    rng = np.random.default_rng(2000 + seed)
    n = int(rng.integers(3, 60))
    # CH-SIMS-like: multiples of 0.1 in float32, hitting every edge; predictions beyond +-1
    t = (rng.integers(-10, 11, n) / 10.0).astype(np.float32)
    p = (rng.integers(-13, 14, n) / 10.0).astype(np.float32)
    ref = _mmsa_sims_reference(p, t)
    got = sims_metrics(p, t)
    for key, expected in ref.items():
        if key == "corr" and not np.isfinite(expected):
            assert got[key] == 0.0
        else:
            assert got[key] == pytest.approx(float(expected), rel=1e-5, abs=1e-6), key


# --------------------------------------------------------------------------- curves


def test_auilc_hand_case():
    # (0.8+0.6)/2*0.1 + (0.6+0.5)/2*0.1 = 0.07 + 0.055 = 0.125
    assert auilc([0.8, 0.6, 0.5]) == pytest.approx(0.125)
    # step 0.2: (1+3)/2*0.2 = 0.4
    assert auilc([1.0, 3.0], step=0.2) == pytest.approx(0.4)
    # 11 rates 0.0..1.0 falling linearly 1 -> 0: trapezoid is exact, area 0.5
    assert auilc(np.linspace(1.0, 0.0, 11)) == pytest.approx(0.5)
    # CH-SIMS range 0.0..0.5 (6 points): constant c -> 0.5*c (not divided by the width)
    assert auilc([0.8] * 6) == pytest.approx(0.4)


def test_mean_over_curve():
    # 0.125 / (0.1 * 2) = 0.625
    assert mean_over_curve([0.8, 0.6, 0.5]) == pytest.approx(0.625)
    assert mean_over_curve([0.8] * 6) == pytest.approx(0.8)
    # 0.4 / (0.2 * 1) = 2
    assert mean_over_curve([1.0, 3.0], step=0.2) == pytest.approx(2.0)
    assert mean_over_curve([0.42]) == 0.42


def test_effective_robustness():
    # sum(a - a0) = 0 - 0.1 - 0.3 = -0.4; sum(LF - LF0) = 0 - 0.15 - 0.45 = -0.6
    # -0.4 - (-0.6) = 0.2
    er = effective_robustness([0.8, 0.7, 0.5], [0.75, 0.6, 0.3])
    assert er == pytest.approx(0.2)
    assert effective_robustness([0.8, 0.7], [0.8, 0.7]) == 0.0
    assert effective_robustness([0.5], [0.9]) == 0.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [regression_metrics, sims_metrics])
def test_bad_inputs(fn):
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        fn([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        fn([[0.1], [0.2]], [0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="finite"):
        fn([0.1, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError, match="numeric"):
        fn(["a", "b"], [0.1, 0.2])


def test_bad_curve_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        auilc([0.5])
    with pytest.raises(ValueError, match="step"):
        auilc([0.5, 0.6], step=0.0)
    with pytest.raises(ValueError, match="1-D"):
        auilc([[0.5, 0.6]])
    with pytest.raises(ValueError, match="at least 1"):
        mean_over_curve([])
    with pytest.raises(ValueError, match="equal length"):
        effective_robustness([0.8, 0.7], [0.8, 0.7, 0.6])
    with pytest.raises(ValueError, match="non-empty"):
        effective_robustness([], [])
    with pytest.raises(ValueError, match="equal length"):
        weighted_f1([0, 1], [0])


def test_metrics_module_imports_no_heavy_dependencies():
    code = (
        "import sys, robustmsa.evaluation.metrics; "
        "bad = [m for m in ('torch', 'ray', 'mlflow', 'sklearn') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_predictions_constant_up_to_rounding_have_zero_correlation():
    """Every modality absent: a model predicts one value, up to float32 rounding that changes
    with the batch size; that noise correlates with the labels by chance (0.0158 was seen)."""
    t = np.linspace(-3, 3, 50)
    rng = np.random.default_rng(0)
    noisy = np.float32(0.4137) + rng.normal(0, 3e-7, 50).astype(np.float32)
    assert np.ptp(noisy) > 0 and abs(np.corrcoef(noisy, t)[0, 1]) > 0
    assert regression_metrics(noisy, t)["corr"] == 0.0
    assert sims_metrics(noisy / 4, t / 3)["corr"] == 0.0
    # A real spread, however small against the labels, is a measurement.
    assert regression_metrics(t * 1e-3, t)["corr"] == pytest.approx(1.0)


def test_degenerate_inputs_follow_one_rule():
    one = regression_metrics([0.7], [1.0])  # a single sample
    assert one["corr"] == 0.0 and one["mae"] == pytest.approx(0.3)
    equal = regression_metrics([0.5, -0.2, 1.0], [2.0, 2.0, 2.0])  # all labels equal
    assert equal["corr"] == 0.0 and equal["acc2_non0"] == pytest.approx(2 / 3)
