"""The synthetic generator and the dataset-directory resolution (DESIGN.md §2)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import open_dataset
from robustmsa.data.source import dataset_dir
from robustmsa.data.synthetic import PRESETS, ensure_synthetic, generate
from robustmsa.errors import DataError

# The tiny preset as documented in synthetic.py.
TINY_SIZES = {"train": 160, "valid": 48, "test": 48}
TINY_LENGTHS = {"text": 8, "audio": 10, "vision": 12}
TINY_DIMS = {"text": 16, "audio": 5, "vision": 7}


def test_generate_is_deterministic_in_preset_and_seed(tmp_path, tiny_dataset):
    again = generate("tiny", tmp_path / "again", seed=0)
    other = generate("tiny", tmp_path / "other", seed=1)
    base = open_dataset(tiny_dataset)
    same = open_dataset(again)
    diff = open_dataset(other)
    assert same["train"].meta.digest == base["train"].meta.digest
    assert diff["train"].meta.digest != base["train"].meta.digest
    # Same digest because the content is the same: check the content itself too.
    for name in ("train", "test"):
        b0 = base[name].batch(np.arange(len(base[name])))
        b1 = same[name].batch(np.arange(len(same[name])))
        assert b0.ids == b1.ids
        np.testing.assert_array_equal(b0.labels.numpy(), b1.labels.numpy())
        for m in MODALITIES:
            np.testing.assert_array_equal(b0.features[m].numpy(), b1.features[m].numpy())
    assert not np.array_equal(diff["train"].labels.numpy(), base["train"].labels.numpy())


def test_tiny_split_sizes_dims_and_meta(tiny_splits):
    for name, split in tiny_splits.items():
        assert len(split) == TINY_SIZES[name]
        assert len(set(split.ids)) == len(split)
        assert split.meta.dims == TINY_DIMS
        assert split.meta.label_range == (-3.0, 3.0)
        assert split.meta.name == "synthetic-tiny"
        assert "seed=0" in split.meta.source
        b = split.batch([0, 1])
        for m in MODALITIES:
            assert b.features[m].shape[-1] == TINY_DIMS[m]
    # Ids do not collide across splits.
    all_ids = [i for s in tiny_splits.values() for i in s.ids]
    assert len(set(all_ids)) == len(all_ids)


def test_tiny_lengths_between_ceil_half_and_full(tiny_dataset):
    for name in ("train", "valid", "test"):
        table = pq.read_table(tiny_dataset / f"{name}.parquet")
        for m in MODALITIES:
            t = TINY_LENGTHS[m]
            lengths = np.asarray(table.column(f"{m}_length").to_pylist())
            frames = [len(x) for x in table.column(m).to_pylist()]
            assert lengths.tolist() == frames
            assert lengths.min() >= math.ceil(t / 2)
            assert lengths.max() <= t
            assert table.column(f"{m}_present").to_pylist() == [True] * len(lengths)
        # Lengths do vary (the bounds are not degenerate) on the larger split.
        if name == "train":
            for m in MODALITIES:
                lengths = table.column(f"{m}_length").to_pylist()
                assert min(lengths) == math.ceil(TINY_LENGTHS[m] / 2)
                assert max(lengths) == TINY_LENGTHS[m]


def test_labels_within_label_range(tiny_splits):
    for split in tiny_splits.values():
        lo, hi = split.meta.label_range
        y = split.labels.numpy()
        assert np.all(np.isfinite(y))
        assert y.min() >= lo
        assert y.max() <= hi
        assert y.std() > 0.5  # a real spread, not a constant


def _pooled(split, m):
    b = split.batch(np.arange(len(split)))
    mask = b.masks[m].numpy()[..., None]
    x = (b.features[m].numpy() * mask).sum(1) / mask.sum(1)
    return np.column_stack([x, np.ones(len(x))]).astype(np.float64), b.labels.numpy()


def _lstsq_valid_mse(splits, m):
    xtr, ytr = _pooled(splits["train"], m)
    xva, yva = _pooled(splits["valid"], m)
    w, *_ = np.linalg.lstsq(xtr, ytr, rcond=None)
    return float(np.mean((xva @ w - yva) ** 2)), float(np.var(yva))


def test_text_is_more_informative_than_audio(tiny_splits):
    assert PRESETS["tiny"].informativeness["text"] > PRESETS["tiny"].informativeness["audio"]
    text_mse, var = _lstsq_valid_mse(tiny_splits, "text")
    audio_mse, _ = _lstsq_valid_mse(tiny_splits, "audio")
    assert text_mse < audio_mse
    # Text alone explains most of the label variance with a linear read-out.
    assert text_mse < 0.5 * var


def test_unknown_preset_lists_known_ones(tmp_path):
    with pytest.raises(DataError) as info:
        generate("huge", tmp_path / "x")
    msg = str(info.value)
    assert "huge" in msg
    for name in PRESETS:
        assert name in msg
    assert not (tmp_path / "x").exists()


def test_ensure_synthetic_generates_once_then_reuses(tmp_path):
    cache = tmp_path / "cache"
    first = ensure_synthetic("tiny", cache, seed=3)
    assert first.is_dir()
    assert first.parent == cache
    files = sorted(first.glob("*.parquet"))
    assert [p.name for p in files] == ["test.parquet", "train.parquet", "valid.parquet"]
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    second = ensure_synthetic("tiny", cache, seed=3)
    assert second == first
    assert {p.name: p.stat().st_mtime_ns for p in files} == stamps
    assert "seed=3" in open_dataset(first)["train"].meta.source
    # Another seed is another directory.
    third = ensure_synthetic("tiny", cache, seed=4)
    assert third != first
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        [first.name, third.name]
    )


def test_ensure_synthetic_same_content_as_generate(tmp_path, tiny_dataset):
    cached = ensure_synthetic("tiny", tmp_path, seed=0)
    assert (
        open_dataset(cached)["valid"].meta.digest == open_dataset(tiny_dataset)["valid"].meta.digest
    )


def test_dataset_dir_parquet_missing_path_names_field_and_path(tmp_path):
    missing = tmp_path / "no-such-dataset"
    with pytest.raises(DataError) as info:
        dataset_dir("parquet", path=str(missing), preset="tiny", seed=0, cache_dir=str(tmp_path))
    msg = str(info.value)
    assert "data.path" in msg
    assert str(missing) in msg
    assert not missing.exists()


def test_dataset_dir_parquet_existing_path(tiny_dataset, tmp_path):
    got = dataset_dir(
        "parquet", path=str(tiny_dataset), preset="tiny", seed=0, cache_dir=str(tmp_path)
    )
    assert got == tiny_dataset
    assert list(tmp_path.iterdir()) == []  # nothing generated


def test_dataset_dir_synthetic_uses_cache(tmp_path):
    got = dataset_dir("synthetic", path=None, preset="tiny", seed=2, cache_dir=str(tmp_path))
    assert got.is_dir()
    assert got.parent == tmp_path
    assert "seed=2" in open_dataset(got)["test"].meta.source
