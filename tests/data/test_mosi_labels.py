"""The packaged CMU-MOSI train labels and the `mosi` preset's label map (issue 12, point 6:
the same default study everywhere, whatever lies outside the repository)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from paths import SHARED_DATA
from robustmsa.data import mosi_labels, synthetic
from robustmsa.data.parquet import open_dataset
from robustmsa.data.synthetic import PRESETS, generate

REAL_TRAIN_LABELS = SHARED_DATA / "cmu-mosi-labels" / "y_train.h5"


def test_packaged_labels_are_the_documented_summary():
    values, counts = np.array(mosi_labels.VALUES), np.array(mosi_labels.COUNTS)
    assert len(values) == len(counts) == 50
    assert np.all(np.diff(values) > 0)  # distinct, ascending
    assert np.all(counts >= 1) and counts.sum() == mosi_labels.N == 1284
    assert values[0] == -3.0 and values[-1] == 3.0
    y = mosi_labels.train_labels()
    assert y.dtype == np.float64 and y.shape == (1284,)
    assert np.all(np.diff(y) >= 0)
    assert int(np.sum(y == 0.0)) == 53  # shared/data/README.md: 53 train labels exactly 0
    assert "arXiv:1606.06259" in mosi_labels.SOURCE


@pytest.mark.skipif(
    not REAL_TRAIN_LABELS.is_file(), reason=f"{REAL_TRAIN_LABELS}: shared real labels absent"
)
def test_packaged_labels_reproduce_the_real_train_labels_exactly():
    real = np.sort(mosi_labels.read_label_file(REAL_TRAIN_LABELS))
    packaged = mosi_labels.train_labels()
    assert packaged.tobytes() == real.tobytes()  # bit for bit, not approximately


def test_mosi_label_map_is_the_packaged_quantile_function():
    label_map, desc = synthetic._label_map(PRESETS["mosi"])
    assert desc == "mosi-quantile"
    assert label_map.kind == "quantile"
    assert label_map.knots == tuple(mosi_labels.train_labels().tolist())
    s = torch.linspace(-6.0, 6.0, 20001, dtype=torch.float64)
    y = label_map(s).numpy()
    assert set(y.tolist()) == set(mosi_labels.VALUES)  # a fine grid hits every value
    assert np.all(np.diff(y) >= 0)
    assert y[0] == -3.0 and y[-1] == 3.0


def test_synthetic_mosi_reads_no_file_outside_the_package(tmp_path, monkeypatch):
    """No path constant, environment variable or label-file lookup is left, and generating
    with every HDF5 open failing gives the packaged labels, identically twice."""
    for gone in ("_DEFAULT_MOSI_LABELS", "MOSI_LABELS_ENV", "mosi_label_file", "_HERE"):
        assert not hasattr(synthetic, gone), gone
    monkeypatch.setenv("ROBUSTMSA_MOSI_LABELS", str(tmp_path / "not-used"))
    import h5py

    def refuse(*args, **kwargs):
        raise AssertionError(f"h5py.File{args} opened while generating")

    monkeypatch.setattr(h5py, "File", refuse)
    preset = dataclasses.replace(
        PRESETS["tiny"], split_sizes={"train": 40, "valid": 8, "test": 8}, label_map="mosi"
    )
    first = open_dataset(generate(preset, tmp_path / "a", seed=3, name="mosi"))
    second = open_dataset(generate(preset, tmp_path / "b", seed=3, name="mosi"))
    assert first["train"].meta.digest == second["train"].meta.digest
    assert "labels=mosi-quantile" in first["train"].meta.source
    allowed = set(np.float32(mosi_labels.VALUES).tolist())
    for split in first.values():
        assert set(split.labels.numpy().tolist()) <= allowed
