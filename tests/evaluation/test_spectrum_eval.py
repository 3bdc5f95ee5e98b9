"""Spectrum evaluation of a model (`SpectrumEvaluator`, `evaluate_spectrum`).

The model is the registered late-fusion baseline, randomly initialised from a fixed seed and in
eval mode; the tests check the table's structure and the determinism promised by
docs/architecture.md §3,
and compare against predictions computed directly with the model. Summaries: test_summaries.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.evaluation.metrics import regression_metrics
from robustmsa.evaluation.spectrum import (
    ROW_FIELDS,
    STREAM_KEY,
    SpectrumEvaluator,
    evaluate_spectrum,
    merge_predictions,
)
from robustmsa.models import MODELS, ModelOutput, MSAModel
from robustmsa.spectrum import apply_point, build_points, draw
from robustmsa.spectrum.protocols import random_rates

SEED = 4242
LEVELS = (0.0, 0.3, 0.6, 1.0)
METRICS = {"mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7"}
PRIOR = 0.37  # a non-zero label prior, so that "all modalities absent" is not simply 0
CHEAP = ["clean", "missing@all", "noise@all"]
EVERY = ["clean", "missing", "noise", "joint", "patterns", "random"]


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
    return build_points(CHEAP, LEVELS)


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
    # One forward per (batch, distinct input): clean and the two level-0 points are the same
    # batch, so every sample is seen once per point but two.
    assert all(len(calls) == len(points) - 2 for calls in model.seen.values())
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


def test_evaluate_spectrum_equals_evaluator(tiny_splits, tiny_dataset, model, table):
    one_shot = evaluate_spectrum(
        model, tiny_splits, "valid", CHEAP, seed=SEED, levels=LEVELS, batch_size=16
    )
    assert isinstance(one_shot, pd.DataFrame)
    assert tuple(one_shot.columns) == ROW_FIELDS
    assert one_shot.to_dict("records") == table
    # A dataset directory works as well as the opened splits.
    from_path = evaluate_spectrum(
        model, tiny_dataset, "valid", CHEAP, seed=SEED, levels=LEVELS, batch_size=16
    )
    pd.testing.assert_frame_equal(from_path, one_shot)


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


# --------------------------------------------------------------------------- every protocol


def _shuffled(n, seed=1):
    return np.random.default_rng(seed).permutation(n)


def test_every_protocol_inputs_bit_identical_across_batching_and_order(valid):
    every = build_points(EVERY, LEVELS)
    ref_model, model = Recorder(), Recorder()
    ref = SpectrumEvaluator(valid, every, seed=SEED, batch_size=16).evaluate(ref_model)
    order = _shuffled(len(valid))
    rows = SpectrumEvaluator(valid, every, seed=SEED, batch_size=5, order=order).evaluate(model)
    # Same batches share a forward: clean, the 12 level-0 curve points and the full pattern
    # (13 repeats); missing@m at 1.0 and the pattern without m (3 repeats). joint@m at 1.0
    # differs from them in its reliability (λ = 1), which the oracle reads.
    assert all(len(calls) == len(every) - 16 for calls in model.seen.values())
    _same_inputs(ref_model, model)
    assert rows == ref


@pytest.mark.parametrize(("bs", "order"), [(7, "shuffled"), (64, "reversed")])
def test_every_protocol_table_independent_of_batching_and_order(
    tiny_splits, valid, model, bs, order
):
    ref = evaluate_spectrum(model, tiny_splits, "valid", EVERY, seed=SEED, levels=LEVELS)
    perm = {"shuffled": _shuffled(len(valid)), "reversed": np.arange(48)[::-1]}
    other = evaluate_spectrum(
        model,
        tiny_splits,
        "valid",
        EVERY,
        seed=SEED,
        levels=LEVELS,
        batch_size=bs,
        order=perm[order],
    )
    points = build_points(EVERY, LEVELS)
    assert len(ref) == len(points) * len(METRICS)
    _assert_same_rows(other.to_dict("records"), ref.to_dict("records"))


def _by_point(df, metric="mae"):
    sub = df[df["metric"] == metric]
    return {(r.protocol, r.modalities, r.level): r.value for r in sub.itertuples()}


def test_equivalent_points_of_different_protocols_agree(tiny_splits, model):
    df = evaluate_spectrum(model, tiny_splits, "valid", EVERY, seed=SEED, levels=LEVELS)
    for metric in METRICS - {"acc2_non0", "f1_non0"}:
        v = _by_point(df, metric)
        clean = v[("clean", "all", 0.0)]
        assert v[("patterns", "text+audio+vision", 0.0)] == clean
        assert v[("joint", "all", 0.0)] == clean
        # Removing a modality is the same input whichever protocol does it.
        assert v[("missing", "text", 1.0)] == v[("patterns", "audio+vision", 0.0)]
        assert v[("joint", "audio", 1.0)] == v[("missing", "audio", 1.0)]
    mae = _by_point(df)
    assert mae[("patterns", "text", 0.0)] != mae[("patterns", "audio", 0.0)]
    assert mae[("missing", "all", 1.0)] != mae[("clean", "all", 0.0)]


def test_random_points_are_per_sample_and_deterministic(tiny_splits, valid, model):
    tables = [
        evaluate_spectrum(
            model, tiny_splits, "valid", "random", seed=SEED, batch_size=bs, order=order
        )
        for bs, order in ((1, None), (5, _shuffled(48)), (64, _shuffled(48, 2)))
    ]
    assert list(tables[0]["modalities"].unique()) == ["draw0", "draw1", "draw2"]
    for other in tables[1:]:
        _assert_same_rows(other.to_dict("records"), tables[0].to_dict("records"))
    # Another seed gives other rates (and other noise): a different table.
    reseeded = evaluate_spectrum(model, tiny_splits, "valid", "random", seed=SEED + 1)
    assert not np.allclose(reseeded["value"], tables[0]["value"], equal_nan=True)
    # The three draws differ from each other.
    mae = _by_point(tables[0])
    assert len({mae[("random", f"draw{k}", 0.0)] for k in range(3)}) == 3


def test_random_prediction_is_the_sample_alone_at_its_own_rates(valid, model):
    (p,) = build_points("random", draws=[2])
    preds = SpectrumEvaluator(valid, [p], seed=SEED, batch_size=16).predict(model)[p.key]
    digest = valid.meta.digest
    rates = {m: random_rates(valid.ids, m, digest=digest, seed=SEED, draw=2) for m in MODALITIES}
    with torch.no_grad():
        for i in range(0, len(valid), 7):
            point = {m: (float(lam[i]), float(eta[i])) for m, (lam, eta) in rates.items()}
            alone = apply_point(
                valid.batch([i]), point, seed=SEED, stream_key=STREAM_KEY, digest=digest
            )
            np.testing.assert_allclose(
                model(alone).prediction.numpy(), preds[i : i + 1], rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"split": "tset"}, "tset"),
        ({"protocols": ["clean", "missing@smell"]}, "smell"),
        ({"batch_size": 0}, "batch_size"),
        ({"order": np.arange(47)}, "order"),
        ({"order": np.zeros(48, dtype=int)}, "order"),
        ({"order": np.arange(48.0)}, "order"),
        ({"levels": [0.0, 1.5]}, "1.5"),
    ],
)
def test_evaluate_spectrum_rejects_bad_arguments(tiny_splits, model, kwargs, needle):
    args = {"split": "valid", "protocols": CHEAP, **kwargs}
    with pytest.raises(ValueError, match=needle):
        evaluate_spectrum(model, tiny_splits, args.pop("split"), args.pop("protocols"), **args)


@pytest.mark.parametrize("world", [2, 3])
def test_shards_merge_to_the_single_worker_table(valid, points, model, table, world):
    """Ray Train workers each predict every world-th row; merged, the table is one worker's."""
    shares = [
        SpectrumEvaluator(valid, points, seed=SEED, batch_size=16, shard=(r, world)).predict(model)
        for r in range(world)
    ]
    for share in shares:  # each worker predicted a strict part of the rows
        assert 0 < int((~np.isnan(share[points[0].key])).sum()) < len(valid)
    merged = merge_predictions(shares)
    evaluator = SpectrumEvaluator(valid, points, seed=SEED, batch_size=16)
    got = {_key(r): r["value"] for r in evaluator.table(merged)}
    want = {_key(r): r["value"] for r in table}
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-7, nan_ok=True), k
    with pytest.raises(ValueError, match="predictions missing"):
        evaluator.table(shares[0])
    with pytest.raises(ValueError, match="shard must be"):
        SpectrumEvaluator(valid, points, seed=SEED, shard=(2, 2))


def test_every_modality_absent_gives_the_same_row_at_every_batch_size(valid, points):
    """QA-MoE with every modality absent predicts one value up to float32 rounding, which
    changes with the batch size; its correlation is 0.0 at every batch size, not the noise
    (0.0158 at batch 7 against 0.0 at 64 before the rule of metrics.is_constant)."""
    spec = MODELS["qa_moe"]
    torch.manual_seed(0)
    qa_moe = spec.build(spec.config_cls(), dict(valid.meta.dims)).eval()
    tables = [
        SpectrumEvaluator(valid, points, seed=SEED, batch_size=bs).evaluate(qa_moe)
        for bs in (7, 64)
    ]
    _assert_same_rows(*tables)
    absent = [
        [
            r["value"]
            for r in t
            if (r["protocol"], r["level"], r["metric"]) == ("missing", 1.0, "corr")
        ]
        for t in tables
    ]
    assert absent[0] == absent[1] == [0.0]
