"""Spectrum evaluation of a model (`SpectrumEvaluator`) and the robustness summaries.

The model is the registered late-fusion baseline, randomly initialised from a fixed seed and in
eval mode; the tests check the table's structure and the determinism promised by DESIGN.md §3,
and compare against predictions computed directly with the model.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.evaluation.metrics import regression_metrics
from robustmsa.evaluation.spectrum import (
    ROW_FIELDS,
    STREAM_KEY,
    SpectrumEvaluator,
    evaluate_spectrum,
)
from robustmsa.evaluation.summaries import curves, spectrum_score, summarize
from robustmsa.models import MODELS, ModelOutput, MSAModel
from robustmsa.spectrum import apply_point, build_points, draw

SEED = 4242
LEVELS = (0.0, 0.3, 0.6, 1.0)
METRICS = {"mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7"}
PRIOR = 0.37  # a non-zero label prior, so that "all modalities absent" is not simply 0


@pytest.fixture(scope="module")
def model(tiny_splits):
    spec = MODELS["late_fusion"]
    torch.manual_seed(0)
    m = spec.build(spec.config_cls(), dict(tiny_splits["valid"].meta.dims))
    with torch.no_grad():
        m.prior.fill_(PRIOR)
    return m.eval()


@pytest.fixture(scope="module")
def points():
    return build_points(["clean", "missing", "noise"], LEVELS)


@pytest.fixture(scope="module")
def valid(tiny_splits):
    return tiny_splits["valid"]


@pytest.fixture(scope="module")
def table(valid, points, model):
    return SpectrumEvaluator(valid, points, seed=SEED, batch_size=16).evaluate(model)


def _key(r):
    return (r["protocol"], r["modalities"], r["level"], r["metric"])


def _assert_same_rows(a, b):
    """Same rows in the same order; values equal up to the float rounding of a forward pass
    over a differently padded batch (a matmul over another shape may round differently)."""
    assert [_key(r) for r in a] == [_key(r) for r in b]
    assert [r["n"] for r in a] == [r["n"] for r in b]
    va = np.array([r["value"] for r in a])
    vb = np.array([r["value"] for r in b])
    np.testing.assert_allclose(va, vb, rtol=1e-6, atol=1e-6, equal_nan=True)


class Recorder(MSAModel):
    """Records, per sample id, the exact inputs it saw; predicts a per-sample function of them
    that does not depend on padding or on the other samples of the batch."""

    def __init__(self):
        super().__init__()
        self.seen: dict[str, list] = {}

    def forward(self, batch: Batch) -> ModelOutput:
        preds = []
        for i, sid in enumerate(batch.ids):
            rec = []
            total = torch.zeros((), dtype=torch.float64)
            for m in MODALITIES:
                frames = batch.features[m][i][batch.masks[m][i]].clone()
                rec.append((frames, bool(batch.present[m][i])))
                total = total + frames.double().sum() * (MODALITIES.index(m) + 1)
            self.seen.setdefault(sid, []).append(rec)
            preds.append(total / 100.0)
        return ModelOutput(prediction=torch.stack(preds).float())


def _same_inputs(a: Recorder, b: Recorder) -> None:
    assert a.seen.keys() == b.seen.keys()
    for sid, calls in a.seen.items():
        assert len(calls) == len(b.seen[sid])
        for rec_a, rec_b in zip(calls, b.seen[sid], strict=True):
            for (xa, pa), (xb, pb) in zip(rec_a, rec_b, strict=True):
                assert pa == pb
                assert torch.equal(xa, xb), sid


@pytest.mark.parametrize(("bs", "cache"), [(7, True), (64, False), (5, False)])
def test_inputs_and_table_bit_identical_across_batching_and_cache(valid, points, bs, cache):
    ref_model, model = Recorder(), Recorder()
    ref = SpectrumEvaluator(valid, points, seed=SEED, batch_size=16, cache=True)
    other = SpectrumEvaluator(valid, points, seed=SEED, batch_size=bs, cache=cache)
    ref_rows = ref.evaluate(ref_model)
    rows = other.evaluate(model)
    # One forward per (batch, point): every sample seen once per point.
    assert all(len(calls) == len(points) for calls in model.seen.values())
    assert len(model.seen) == len(valid)
    _same_inputs(ref_model, model)
    assert rows == ref_rows


def test_one_row_per_point_and_metric(table, points, valid):
    assert len(points) == 1 + 2 * len(LEVELS)
    assert len(table) == len(points) * len(METRICS)
    for r in table:
        assert tuple(r) == ROW_FIELDS
        assert isinstance(r["value"], float)
        assert isinstance(r["level"], float)
        assert r["n"] == len(valid) == 48
    got = {_key(r) for r in table}
    expected = {
        (p.protocol, p.modalities, float(p.level), metric) for p in points for metric in METRICS
    }
    assert got == expected
    assert len(got) == len(table)  # no duplicates


def test_rows_follow_point_order(table, points):
    per_point = [(r["protocol"], r["modalities"], r["level"]) for r in table[:: len(METRICS)]]
    assert per_point == [(p.protocol, p.modalities, p.level) for p in points]


def test_values_are_metrics_of_predict(valid, points, model):
    ev = SpectrumEvaluator(valid, points, seed=SEED, batch_size=16)
    preds = ev.predict(model)
    assert set(preds) == {p.key for p in points}
    labels = valid.labels.numpy()
    rows = {_key(r): r["value"] for r in ev.evaluate(model)}
    for p in points:
        assert preds[p.key].shape == (48,)
        mae = float(np.mean(np.abs(preds[p.key].astype(np.float64) - labels)))
        assert rows[(p.protocol, p.modalities, p.level, "mae")] == pytest.approx(mae, rel=1e-9)


@pytest.mark.parametrize("batch_size", [7, 64])
def test_table_independent_of_batch_size(valid, points, model, table, batch_size):
    rows = SpectrumEvaluator(valid, points, seed=SEED, batch_size=batch_size).evaluate(model)
    _assert_same_rows(rows, table)


def test_cached_equals_uncached(valid, points, model):
    cached = SpectrumEvaluator(valid, points, seed=SEED, batch_size=16, cache=True)
    uncached = SpectrumEvaluator(valid, points, seed=SEED, batch_size=16, cache=False)
    assert cached._cached is not None
    assert uncached._cached is None
    first = cached.evaluate(model)
    # Same batch size: bit-identical, and a cached evaluator gives the same table twice.
    assert first == uncached.evaluate(model)
    assert first == cached.evaluate(model)


def test_evaluate_spectrum_equals_evaluator(valid, points, model, table):
    one_shot = evaluate_spectrum(model, valid, points, seed=SEED, batch_size=16)
    assert one_shot == table


def test_seed_changes_corrupted_points_only(valid, points, model):
    a = SpectrumEvaluator(valid, points, seed=SEED, batch_size=16).predict(model)
    b = SpectrumEvaluator(valid, points, seed=SEED + 1, batch_size=16).predict(model)
    assert np.array_equal(a["clean/all/0.00"], b["clean/all/0.00"])
    assert not np.allclose(a["noise/all/0.60"], b["noise/all/0.60"])


def test_predictions_independent_of_order_and_batching(valid, points, model):
    ref = SpectrumEvaluator(valid, points, seed=SEED, batch_size=len(valid)).predict(model)
    small = SpectrumEvaluator(valid, points, seed=SEED, batch_size=5).predict(model)
    # Recompute by hand in a shuffled order and uneven sub-batches with the public operators.
    perm = np.random.default_rng(1).permutation(len(valid))
    chunks = np.split(perm, [3, 4, 20, 31])
    digest = valid.meta.digest
    manual = {p.key: np.full(len(valid), np.nan, np.float32) for p in points}
    with torch.no_grad():
        for idx in chunks:
            clean = valid.batch(idx)
            draws = draw(clean, MODALITIES, seed=SEED, stream_key=STREAM_KEY, digest=digest)
            for p in points:
                batch = apply_point(
                    clean, p.point, seed=SEED, stream_key=STREAM_KEY, digest=digest, draws=draws
                )
                manual[p.key][idx] = model(batch).prediction.numpy()
    for p in points:
        np.testing.assert_allclose(small[p.key], ref[p.key], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(manual[p.key], ref[p.key], rtol=1e-5, atol=1e-6)


def test_predict_restores_training_mode(valid, points, model):
    ev = SpectrumEvaluator(valid, points[:2], seed=SEED, batch_size=16)
    model.train()
    try:
        ev.predict(model)
        assert model.training
    finally:
        model.eval()


def _all_absent(batch: Batch) -> Batch:
    return Batch(
        features={m: torch.zeros_like(x) for m, x in batch.features.items()},
        masks={m: torch.zeros_like(x) for m, x in batch.masks.items()},
        present={m: torch.zeros_like(x) for m, x in batch.present.items()},
        labels=batch.labels,
        ids=list(batch.ids),
    )


def test_missing_level_one_equals_all_absent(valid, table, model):
    batch = _all_absent(valid.batch(np.arange(len(valid))))
    with torch.no_grad():
        pred = model(batch).prediction.double().numpy()
    labels = valid.labels.double().numpy()
    expected_mae = float(np.mean(np.abs(pred - labels)))
    # late fusion with nothing present predicts its prior for everyone
    np.testing.assert_allclose(pred, PRIOR, rtol=1e-6)
    rows = {_key(r): r["value"] for r in table}
    assert rows[("missing", "all", 1.0, "mae")] == pytest.approx(expected_mae, rel=1e-6)
    assert rows[("missing", "all", 1.0, "mae")] != pytest.approx(rows[("clean", "all", 0.0, "mae")])


@pytest.mark.parametrize("protocol", ["missing", "noise"])
def test_level_zero_equals_clean(table, protocol):
    by_metric = {m: {} for m in METRICS}
    for r in table:
        if r["level"] == 0.0:
            by_metric[r["metric"]][r["protocol"]] = r["value"]
    for metric, values in by_metric.items():
        clean = values["clean"]
        if np.isnan(clean):
            assert np.isnan(values[protocol]), metric
        else:
            assert values[protocol] == clean, metric


def test_clean_mae_matches_direct_forward(valid, table, model):
    with torch.no_grad():
        pred = model(valid.batch(np.arange(len(valid)))).prediction.numpy()
    expected = regression_metrics(pred, valid.labels.numpy())
    rows = {_key(r): r["value"] for r in table}
    for metric, value in expected.items():
        assert rows[("clean", "all", 0.0, metric)] == pytest.approx(value, rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------- summaries


def _row(protocol, mods, level, metric, value):
    return {
        "protocol": protocol,
        "modalities": mods,
        "level": level,
        "metric": metric,
        "value": value,
        "n": 10,
    }


HAND_TABLE = [
    _row("clean", "all", 0.0, "mae", 1.0),
    _row("clean", "all", 0.0, "corr", 0.9),
    _row("missing", "all", 0.0, "mae", 1.0),
    _row("missing", "all", 0.1, "mae", 2.0),
    _row("missing", "all", 0.2, "mae", 4.0),
    _row("missing", "all", 0.0, "corr", 0.9),
    _row("missing", "all", 0.1, "corr", 0.5),
    _row("missing", "all", 0.2, "corr", 0.1),
    _row("noise", "text", 0.0, "mae", 1.0),
    _row("noise", "text", 0.1, "mae", 3.0),
]


def test_spectrum_score_hand_computed():
    # Width-normalised trapezoid mean per MAE curve, then the plain mean of the curves:
    #   clean: one level -> 1.0
    #   missing/all: ((1+2)/2*0.1 + (2+4)/2*0.1) / 0.2 = (0.15 + 0.30) / 0.2 = 2.25
    #   noise/text: ((1+3)/2*0.1) / 0.1 = 2.0
    # corr rows are ignored.
    assert spectrum_score(HAND_TABLE) == pytest.approx((1.0 + 2.25 + 2.0) / 3)


def test_spectrum_score_independent_of_row_order():
    rows = list(HAND_TABLE)
    random.Random(7).shuffle(rows)
    assert spectrum_score(rows) == pytest.approx((1.0 + 2.25 + 2.0) / 3)


def test_spectrum_score_needs_mae_rows():
    with pytest.raises(ValueError, match="mae"):
        spectrum_score([r for r in HAND_TABLE if r["metric"] != "mae"])


def test_summarize_names_and_emt_dlfr_trapezoid():
    out = summarize(HAND_TABLE)
    # EMT-DLFR AUILC: sum over consecutive levels of (m_i + m_{i+1}) / 2 * 0.1, not normalised.
    assert out == pytest.approx(
        {
            "robust/missing/all/auilc_mae": 0.15 + 0.30,
            "robust/missing/all/mean_mae": 2.25,
            "robust/missing/all/auilc_corr": (0.9 + 0.5) / 2 * 0.1 + (0.5 + 0.1) / 2 * 0.1,
            "robust/missing/all/mean_corr": ((0.9 + 0.5) / 2 + (0.5 + 0.1) / 2) / 2,
            "robust/noise/text/auilc_mae": (1.0 + 3.0) / 2 * 0.1,
            "robust/noise/text/mean_mae": 2.0,
        }
    )
    # Single-level curves (clean) have no summary.
    assert not any(k.startswith("robust/clean/") for k in out)


def test_summarize_eleven_level_curve():
    levels = [round(0.1 * i, 1) for i in range(11)]
    values = [(lv - 0.5) ** 2 for lv in levels]
    rows = [_row("missing", "all", lv, "mae", v) for lv, v in zip(levels, values, strict=True)]
    expected = sum((values[i] + values[i + 1]) / 2 * 0.1 for i in range(10))
    out = summarize(rows)
    assert out["robust/missing/all/auilc_mae"] == pytest.approx(expected)
    assert out["robust/missing/all/mean_mae"] == pytest.approx(expected / 1.0)


def test_curves_order_by_level_even_if_shuffled():
    rows = [
        _row("noise", "all", lv, "mae", 10 * lv + 1) for lv in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    ] + [_row("noise", "all", lv, "corr", -lv) for lv in (0.0, 0.1, 0.2)]
    rows += [_row("missing", "text", lv, "mae", 5 - lv) for lv in (0.0, 0.5, 1.0)]
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    got = curves(shuffled, "mae")
    assert set(got) == {("noise", "all"), ("missing", "text")}
    assert got[("noise", "all")] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert got[("missing", "text")] == pytest.approx([5.0, 4.5, 4.0])
    assert curves(shuffled, "corr") == {("noise", "all"): pytest.approx([0.0, -0.1, -0.2])}
    assert curves(shuffled, "acc7") == {}
