"""The Bayes oracle scored on the spectrum points of a model (`robustmsa.evaluation.ceiling`).

Runs on the tiny synthetic dataset (valid split, 48 samples); the oracle's predictions are
recomputed by hand with the public operators to show it sees the model's corrupted inputs.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from robustmsa.data import mosi_labels
from robustmsa.data.batch import MODALITIES
from robustmsa.data.oracle import DECIDED, Oracle
from robustmsa.data.parquet import open_dataset
from robustmsa.data.schema import SPLITS
from robustmsa.data.synthetic import LabelMap
from robustmsa.evaluation.ceiling import OracleModel, oracle_rows
from robustmsa.evaluation.metrics import regression_metrics
from robustmsa.evaluation.spectrum import STREAM_KEY, SpectrumEvaluator
from robustmsa.spectrum import apply_point, build_points, draw

SEED = 7
LEVELS = (0.0, 0.5, 1.0)


@pytest.fixture(scope="module")
def valid(tiny_splits):
    return tiny_splits["valid"]


@pytest.fixture(scope="module")
def points():
    return build_points(["clean", "missing@all", "noise@all"], LEVELS)


@pytest.fixture(scope="module")
def evaluator(valid, points):
    return SpectrumEvaluator(valid, points, seed=SEED, batch_size=16)


@pytest.fixture(scope="module")
def rows(evaluator):
    return oracle_rows(evaluator)


def _value(rows, protocol, modalities, level, metric="mae"):
    (hit,) = [
        r["value"]
        for r in rows
        if (r["protocol"], r["modalities"], r["level"], r["metric"])
        == (protocol, modalities, level, metric)
    ]
    return hit


def test_rows_cover_every_point_and_metric(rows, points, valid):
    metrics = sorted({r["metric"] for r in rows})
    assert "mae" in metrics and "corr" in metrics
    expected = [(p.protocol, p.modalities, p.level, m) for p in points for m in metrics]
    got = [(r["protocol"], r["modalities"], r["level"], r["metric"]) for r in rows]
    assert sorted(got) == sorted(expected)
    assert {r["n"] for r in rows} == {len(valid)}


def test_oracle_beats_the_best_constant_at_clean(rows, valid):
    labels = valid.labels.numpy().astype(np.float64)
    # The median of the very labels scored: no constant has a lower MAE on them.
    best_constant = float(np.mean(np.abs(labels - np.median(labels))))
    assert _value(rows, "clean", "all", 0.0) < best_constant


def test_oracle_mae_rises_along_missing_all(rows, valid, tiny_dataset):
    curve = [_value(rows, "missing", "all", lv) for lv in LEVELS]
    assert curve[0] < curve[1] < curve[2]
    # Everything dropped: the posterior is the prior, so every prediction is the prior median.
    labels = valid.labels.numpy().astype(np.float64)
    prior_median = Oracle.load(tiny_dataset).prior_median()
    assert curve[2] == pytest.approx(float(np.mean(np.abs(labels - prior_median))), rel=1e-5)


def test_rows_are_the_oracle_on_the_models_corrupted_inputs(rows, valid, points, tiny_dataset):
    """Recompute by hand: whole split in one batch, the evaluator's stream key and seed."""
    oracle = Oracle.load(tiny_dataset)
    clean = valid.batch(np.arange(len(valid)))
    digest = valid.meta.digest
    draws = draw(clean, MODALITIES, seed=SEED, stream_key=STREAM_KEY, digest=digest)
    labels = valid.labels.numpy()
    for p in points:
        batch = apply_point(
            clean, p.point, seed=SEED, stream_key=STREAM_KEY, digest=digest, draws=draws
        )
        median, decided = oracle.decisions(batch)
        expected = regression_metrics(median.numpy(), labels)
        for metric in ("mae", "corr", "f1_has0"):  # no per-sample Bayes decision: the median's
            got = _value(rows, p.protocol, p.modalities, p.level, metric)
            assert got == pytest.approx(float(expected[metric]), rel=1e-5, abs=1e-6), p.key
        for metric in DECIDED:  # each accuracy scored on its own Bayes decision
            own = regression_metrics(decided[metric].numpy(), labels)[metric]
            got = _value(rows, p.protocol, p.modalities, p.level, metric)
            assert got == pytest.approx(float(own), rel=1e-6, nan_ok=True), (p.key, metric)


def test_noise_needs_the_reliability_apply_point_sets(valid, tiny_dataset):
    """At λ = 1 the features are pure noise: the oracle, told so by ``batch.reliability``,
    predicts the prior median; the same batch stripped of it is read as clean and misled."""
    oracle = OracleModel(Oracle.load(tiny_dataset))
    (point,) = build_points(["noise@all"], [1.0])
    clean = valid.batch(np.arange(len(valid)))
    noisy = apply_point(clean, point.point, seed=SEED, stream_key=STREAM_KEY, digest="d")
    told = oracle(noisy).prediction
    assert told.dtype == torch.float32 and told.shape == (len(valid),)
    assert torch.allclose(told, torch.full_like(told, oracle.oracle.prior_median()), atol=1e-5)
    stripped = dataclasses.replace(noisy, reliability={})
    assert not torch.allclose(oracle(stripped).prediction, told, atol=1e-3)


def test_not_synthetic_gives_none(tiny_dataset, tmp_path, points):
    """The same Parquet splits without the generator file: imported data, no oracle."""
    for name in SPLITS:
        shutil.copy(tiny_dataset / f"{name}.parquet", tmp_path / f"{name}.parquet")
    splits = open_dataset(tmp_path)
    evaluator = SpectrumEvaluator(splits["valid"], points, seed=SEED, batch_size=16)
    assert oracle_rows(evaluator) is None


def test_a_process_computes_each_table_once_and_hands_out_copies(valid, points, monkeypatch):
    """Same dataset, split, points and seed: the kept table, even from a new evaluator (a
    finished trial's). The oracle is made to fail after the first table to show it is not
    asked again; a different seed is a different table and asks it."""
    first = oracle_rows(SpectrumEvaluator(valid, points, seed=SEED + 1, batch_size=16))

    def refuse(self, batch):
        raise AssertionError("the oracle ran again")

    monkeypatch.setattr(OracleModel, "forward", refuse)
    again = oracle_rows(SpectrumEvaluator(valid, points, seed=SEED + 1, batch_size=8))
    assert again == first
    again[0]["value"] = -1.0  # the caller's copy: the kept table is untouched
    assert oracle_rows(SpectrumEvaluator(valid, points, seed=SEED + 1))[0] == first[0]
    with pytest.raises(AssertionError, match="ran again"):
        oracle_rows(SpectrumEvaluator(valid, points, seed=SEED + 2, batch_size=16))
    with pytest.raises(AssertionError, match="ran again"):
        oracle_rows(SpectrumEvaluator(valid, points[:2], seed=SEED + 1, batch_size=16))


LABEL_MAPS = {
    "linear": LabelMap("linear", center=0.2, scale=1.3, lo=-3.0, hi=3.0),
    "linear-narrow": LabelMap("linear", center=0.0, scale=0.5, lo=-1.0, hi=1.0),
    "mosi-quantile": LabelMap("quantile", lo=-3.0, hi=3.0, knots=tuple(mosi_labels.train_labels())),
}


@pytest.mark.parametrize("name", sorted(LABEL_MAPS))
def test_class_probabilities_match_sampling_the_posterior(name):
    """Brute force: draw the score from its Gaussian posterior, map it, round as the metrics
    do, count."""
    label_map = LABEL_MAPS[name]
    mean = torch.tensor([-1.2, -0.1, 0.0, 0.4, 2.0], dtype=torch.float64)
    var = torch.tensor([0.05, 0.3, 1.0, 0.02, 0.5], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    draws = mean[:, None] + var.sqrt()[:, None] * torch.randn(
        5, 200_000, generator=gen, dtype=torch.float64
    )
    y = label_map(draws).numpy()
    for bound in (2.0, 3.0):
        classes, probs = label_map.class_probabilities(mean, var, bound)
        counted = np.round(np.clip(y, -bound, bound))
        for j, c in enumerate(classes.tolist()):
            freq = (counted == c).mean(axis=1)
            np.testing.assert_allclose(probs[:, j].numpy(), freq, atol=5e-3, err_msg=f"{c}")
        np.testing.assert_allclose(probs.sum(dim=1).numpy(), 1.0, atol=1e-9)
    positive, negative = label_map.probability_positive(mean, var)
    np.testing.assert_allclose(positive.numpy(), (y > 0).mean(axis=1), atol=5e-3)
    np.testing.assert_allclose(negative.numpy(), (y < 0).mean(axis=1), atol=5e-3)


def test_the_accuracy_decisions_beat_rounding_the_median_in_expectation(valid, tiny_dataset):
    """Under the posterior each decision's expected accuracy is the highest a per-sample
    prediction can have, so at least the median's; on the MOSI label map, whose mass sits on
    few values, the modal class is often not the median's."""
    oracle = Oracle.load(tiny_dataset)
    oracle.label_map = LABEL_MAPS["mosi-quantile"]
    (point,) = build_points(["noise@all"], [0.8])
    clean = valid.batch(np.arange(len(valid)))
    batch = apply_point(clean, point.point, seed=SEED, stream_key=STREAM_KEY, digest="d")
    median, decided = oracle.decisions(batch)
    mean, var = oracle.posterior_score(batch).flat()  # one component: no window, no cue
    for metric, bound in (("acc7", 3.0), ("acc5", 2.0)):
        classes, probs = oracle.label_map.class_probabilities(mean, var, bound)
        lowest = classes[0]
        ours = probs.gather(1, (decided[metric].double() - lowest).round().long()[:, None])
        rounded_median = median.double().clamp(-bound, bound).round()
        rounded = probs.gather(1, (rounded_median - lowest).round().long()[:, None])
        assert (ours >= rounded - 1e-12).all(), metric
        assert (ours > rounded + 1e-6).any(), metric
