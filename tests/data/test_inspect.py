"""`inspect_dataset` / `format_inspection` on a hand-built dataset; every expected number below
is worked out by hand from the arrays that are written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from robustmsa.data import inspect as inspect_mod
from robustmsa.data.batch import MODALITIES
from robustmsa.data.inspect import format_inspection, inspect_dataset, label_bins
from robustmsa.data.parquet import FrameStore, SplitArrays, open_dataset, write_dataset
from robustmsa.data.schema import DatasetMeta

DIMS = {"text": 2, "audio": 1, "vision": 3}
LENGTHS = {
    "train": {"text": [2, 3, 1, 2], "audio": [0, 4, 0, 2], "vision": [1, 1, 1, 1]},
    "valid": {"text": [5, 1], "audio": [0, 0], "vision": [2, 3]},
    "test": {"text": [1, 1, 1], "audio": [3, 0, 0], "vision": [0, 2, 2]},
}
LABELS = {
    "train": [-3.0, 0.0, 0.0, 2.5],
    "valid": [-1.0, 3.0],
    "test": [1.5, -2.0, 0.25],
}


def make_splits() -> dict[str, SplitArrays]:
    splits = {}
    for name, lens in LENGTHS.items():
        n = len(LABELS[name])
        splits[name] = SplitArrays(
            ids=[f"{name}{i}" for i in range(n)],
            labels=np.array(LABELS[name], np.float32),
            frames={
                m: [np.full((t, DIMS[m]), i + 0.5, np.float32) for i, t in enumerate(lens[m])]
                for m in MODALITIES
            },
            present={m: np.array([t > 0 for t in lens[m]]) for m in MODALITIES},
            raw_text=[f"clip {name} {i}" for i in range(n)],
        )
    return splits


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    meta = DatasetMeta(name="handmade", dims=dict(DIMS), label_range=(-3.0, 3.0), source="hand")
    return write_dataset(tmp_path_factory.mktemp("inspect") / "ds", make_splits(), meta)


@pytest.fixture(scope="module")
def info(root):
    return inspect_dataset(root)


def test_dataset_level_fields(root, info):
    assert info["path"] == str(root)
    assert info["name"] == "handmade"
    assert info["source"] == "hand"
    assert info["digest"] == open_dataset(root)["train"].meta.digest
    assert len(info["digest"]) == 16
    assert info["dims"] == {"text": 2, "audio": 1, "vision": 3}
    assert info["label_range"] == [-3.0, 3.0]
    assert info["optional_columns"] == ["raw_text"]
    assert info["total"] == 4 + 2 + 3
    assert list(info["splits"]) == ["train", "valid", "test"]
    assert [s["count"] for s in info["splits"].values()] == [4, 2, 3]
    json.dumps(info)  # plain JSON-able numbers


def test_presence_rates(info):
    s = info["splits"]
    assert s["train"]["presence"] == {"text": 1.0, "audio": 0.5, "vision": 1.0}
    assert s["valid"]["presence"] == {"text": 1.0, "audio": 0.0, "vision": 1.0}
    assert s["test"]["presence"] == pytest.approx({"text": 1.0, "audio": 1 / 3, "vision": 2 / 3})


def test_lengths_over_present_samples_and_frame_totals(info):
    s = info["splits"]
    # train text [2, 3, 1, 2]; audio present only on rows 1, 3 with 4 and 2 frames.
    assert s["train"]["lengths"]["text"] == {"min": 1, "mean": 2.0, "max": 3}
    assert s["train"]["lengths"]["audio"] == {"min": 2, "mean": 3.0, "max": 4}
    assert s["train"]["lengths"]["vision"] == {"min": 1, "mean": 1.0, "max": 1}
    assert s["train"]["frames"] == {"text": 8, "audio": 6, "vision": 4}
    assert s["valid"]["lengths"]["text"] == {"min": 1, "mean": 3.0, "max": 5}
    # No valid sample has audio: no length statistics.
    assert s["valid"]["lengths"]["audio"] == {"min": None, "mean": None, "max": None}
    assert s["valid"]["frames"] == {"text": 6, "audio": 0, "vision": 5}
    assert s["test"]["lengths"]["vision"] == {"min": 2, "mean": 2.0, "max": 2}
    assert s["test"]["lengths"]["audio"] == {"min": 3, "mean": 3.0, "max": 3}


def test_label_statistics_and_histogram(info):
    s = info["splits"]
    train = s["train"]["labels"]
    assert (train["min"], train["max"]) == (-3.0, 2.5)
    assert train["mean"] == pytest.approx((-3.0 + 0.0 + 0.0 + 2.5) / 4)
    assert train["zeros"] == 2
    assert train["nonfinite"] == 0
    edges = [(h["lo"], h["hi"]) for h in train["histogram"]]
    assert edges == [(-3, -2), (-2, -1), (-1, 0), (0, 1), (1, 2), (2, 3)]
    # -3 -> [-3, -2); two zeros -> [0, 1); 2.5 -> [2, 3].
    assert [h["count"] for h in train["histogram"]] == [1, 0, 0, 2, 0, 1]
    # valid: -1 -> [-1, 0); 3.0 (the upper end) falls in the last, closed bin [2, 3].
    assert [h["count"] for h in s["valid"]["labels"]["histogram"]] == [0, 0, 1, 0, 0, 1]
    assert s["valid"]["labels"]["zeros"] == 0
    # test: 1.5 -> [1, 2); -2 -> [-2, -1); 0.25 -> [0, 1).
    assert [h["count"] for h in s["test"]["labels"]["histogram"]] == [0, 1, 0, 1, 1, 0]
    assert s["test"]["labels"]["mean"] == pytest.approx((1.5 - 2.0 + 0.25) / 3)


def test_nonfinite_counts_zero_for_a_valid_file(info):
    for s in info["splits"].values():
        assert s["nonfinite"] == {m: {"nan": 0, "inf": 0} for m in MODALITIES}


def test_nonfinite_counts_are_computed(root, monkeypatch):
    """A valid file cannot hold NaN/inf, so inject them after the (validating) open."""
    splits = open_dataset(root)
    store = splits["train"].frames["audio"]
    values = store.array.copy()  # 6 frames x 1 feature, then the padding row
    values[0, 0], values[3, 0], values[5, 0] = np.nan, np.inf, -np.inf
    splits["train"].frames["audio"] = FrameStore(values, store.offsets)
    monkeypatch.setattr(inspect_mod, "open_dataset", lambda path: splits)
    got = inspect_dataset(root)["splits"]["train"]["nonfinite"]
    assert got["audio"] == {"nan": 1, "inf": 2}
    assert got["text"] == {"nan": 0, "inf": 0}


def test_label_bins():
    assert label_bins(-1.0, 1.0) == [(-1.0, 0.0), (0.0, 1.0)]
    assert label_bins(0.0, 2.5) == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
    assert label_bins(0.0, 0.5) == [(0.0, 0.5)]


def test_format_inspection_is_a_readable_report(info):
    text = format_inspection(info)
    lines = text.splitlines()
    assert lines[0].split() == ["dataset", "handmade"]
    assert info["digest"] in text
    assert "text 2, audio 1, vision 3" in text
    assert "train 4, valid 2, test 3 (total 9)" in text
    assert "optional  raw_text" in text
    assert "train: 4 samples" in text
    audio = next(ln for ln in lines if ln.split()[:2] == ["audio", "50.0%"])
    assert audio.split() == ["audio", "50.0%", "2", "3.0", "4", "6", "0", "0"]
    no_audio = next(ln for ln in lines if ln.split()[:2] == ["audio", "0.0%"])
    assert no_audio.split()[2:5] == ["-", "-", "-"]
    assert "exact zeros 2 (50.0%)" in text
    assert any(ln.split()[:3] == ["[2,", "3]", "1"] for ln in lines)
    assert all(len(ln) <= 100 for ln in lines)
