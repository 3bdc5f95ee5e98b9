"""Standardised targets: a label range not centred at 0 costs nothing (`MSAModel`).

Every model is trained on the tiny preset and on a copy whose labels are all shifted by the same
constant (as ICT-MMMO's 1-5 sit away from 0): the predictions must be the same up to that shift
and the validation MAE the same. Without standardisation the shifted copy costs the models the
steps an output bias needs to reach the label mean (issue 15's ICT-MMMO findings).
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from model_batches import SMALL_MULT
from robustmsa.config import from_dict
from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import SplitArrays, open_dataset, write_dataset
from robustmsa.data.schema import SPLITS, DatasetMeta
from robustmsa.models import MODELS
from robustmsa.models.base import target_scale
from robustmsa.training.checkpoint import load_weights
from robustmsa.training.loop import build_model, run_training
from robustmsa.training.reporting import LocalReporter

SHIFT = 3.0  # labels in [-3, 3] become [0, 6]
SMALL = {
    "qa_moe": {"hidden": 16, "expert_hidden": 32},
    "late_fusion": {"hidden": 16},
    "derl": {"hidden": 16},
    "mult": SMALL_MULT,
    "promma": SMALL_MULT,
}


def shifted_copy(src, dst, shift: float):
    """A copy of the dataset ``src`` at ``dst`` with every label (and the label range) moved by
    ``shift``; frames, presence and ids as they were."""
    meta = open_dataset(src)["train"].meta
    splits = {}
    for name in SPLITS:
        t = pq.read_table(src / f"{name}.parquet")
        splits[name] = SplitArrays(
            ids=t.column("id").to_pylist(),
            labels=t.column("label").to_numpy().astype(np.float32) + np.float32(shift),
            frames={
                m: [
                    np.asarray(r, np.float32).reshape(-1, meta.dims[m])
                    for r in t.column(m).to_pylist()
                ]
                for m in MODALITIES
            },
            present={
                m: t.column(f"{m}_present").to_numpy(zero_copy_only=False) for m in MODALITIES
            },
        )
    lo, hi = meta.label_range
    moved = DatasetMeta(
        name=meta.name, dims=meta.dims, label_range=(lo + shift, hi + shift), source=meta.source
    )
    return write_dataset(dst, splits, moved)


@pytest.fixture(scope="module")
def shifted_dataset(tiny_dataset, tmp_path_factory):
    return shifted_copy(tiny_dataset, tmp_path_factory.mktemp("shifted") / "tiny", SHIFT)


def trained(dataset, name, root, link="standardise"):
    """(validation predictions (N,) of the best epoch, its clean validation MAE)."""
    config = from_dict(
        {
            "data": {"source": "parquet", "path": str(dataset)},
            "model": {"name": name, "params": SMALL.get(name, {})},
            "training": {"epochs": 2, "batch_size": 32, "seed": 0, "target_link": link},
            "spectrum": {"protocols": ["clean"]},
        }
    )
    reporter = LocalReporter(checkpoint_root=root)
    outcome = run_training(config, reporter)
    valid = open_dataset(dataset)["valid"]
    model = build_model(config, valid.meta.dims)
    model.load_state_dict(load_weights(reporter.checkpoints[-1], best=True))
    model.eval()
    with torch.no_grad():
        predictions = model(valid.batch(list(range(len(valid))))).prediction
    mae = next(r["value"] for r in outcome.rows if r["metric"] == "mae")
    return predictions, mae


def test_every_model_is_registered_with_a_small_config():
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_constant_shift_of_the_labels_shifts_the_predictions_and_keeps_the_mae(
    name, tiny_dataset, shifted_dataset, tmp_path
):
    plain, plain_mae = trained(tiny_dataset, name, tmp_path / "plain")
    moved, moved_mae = trained(shifted_dataset, name, tmp_path / "moved")
    # The model sees the same standardised targets; only float32 rounding of y + 3 differs.
    torch.testing.assert_close(moved - SHIFT, plain, atol=2e-3, rtol=0)
    assert moved_mae == pytest.approx(plain_mae, abs=1e-3)


def test_with_the_normal_score_link_a_shift_costs_nothing_either(
    tiny_dataset, shifted_dataset, tmp_path
):
    plain, plain_mae = trained(tiny_dataset, "late_fusion", tmp_path / "plain", "normal_score")
    moved, moved_mae = trained(shifted_dataset, "late_fusion", tmp_path / "moved", "normal_score")
    torch.testing.assert_close(moved - SHIFT, plain, atol=2e-3, rtol=0)
    assert moved_mae == pytest.approx(plain_mae, abs=1e-3)
    affine, _ = trained(tiny_dataset, "late_fusion", tmp_path / "affine")
    assert not torch.allclose(plain, affine, atol=1e-2)  # the link changed what was learned


@pytest.mark.parametrize("link", ["standardise", "normal_score"])
def test_the_checkpoint_carries_the_training_label_scale_and_link(link, tiny_dataset, tmp_path):
    config = from_dict(
        {
            "data": {"source": "parquet", "path": str(tiny_dataset)},
            "model": {"name": "late_fusion", "params": {"hidden": 16}},
            "training": {"epochs": 1, "batch_size": 32, "seed": 0, "target_link": link},
            "spectrum": {"protocols": ["clean"]},
        }
    )
    reporter = LocalReporter(checkpoint_root=tmp_path)
    run_training(config, reporter)
    weights = load_weights(reporter.checkpoints[-1], best=True)
    labels = open_dataset(tiny_dataset)["train"].labels
    mean, std = target_scale(labels)
    assert float(weights["target_mean"]) == pytest.approx(mean, rel=1e-6)
    assert float(weights["target_std"]) == pytest.approx(std, rel=1e-6)
    assert std != pytest.approx(1.0) and mean != pytest.approx(0.0, abs=1e-3)
    assert bool(weights["target_normal_score"]) == (link == "normal_score")
    model = build_model(config, open_dataset(tiny_dataset)["train"].meta.dims)
    model.load_state_dict(weights)
    if link == "normal_score":  # the loaded model maps every training label there and back
        back = model.from_standardised(model.to_standardised(labels))
        torch.testing.assert_close(back, labels, atol=1e-5, rtol=0)
        assert float(weights["target_knots"][0]) == pytest.approx(
            (float(labels.min()) - mean) / std, abs=1e-5
        )
    else:
        assert not torch.any(weights["target_knots"])
