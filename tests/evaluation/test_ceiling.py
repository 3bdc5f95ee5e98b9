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
from robustmsa.data.batch import MODALITIES
from robustmsa.data.oracle import Oracle
from robustmsa.data.parquet import open_dataset
from robustmsa.data.schema import SPLITS
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
        expected = regression_metrics(oracle.predict(batch).numpy(), labels)
        for metric in ("mae", "corr"):
            got = _value(rows, p.protocol, p.modalities, p.level, metric)
            assert got == pytest.approx(float(expected[metric]), rel=1e-5, abs=1e-6), p.key


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
