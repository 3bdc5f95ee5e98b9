"""The frame cache (`robustmsa.data.frame_cache`): built once, mapped after, rebuilt when the
file changes, validated while streaming, never left half-built."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from handmade import make_meta, make_splits
from robustmsa.data import frame_cache
from robustmsa.data.batch import MODALITIES
from robustmsa.data.frame_cache import cache_dir_for, frame_cache_root
from robustmsa.data.parquet import ParquetSplit, write_dataset
from robustmsa.errors import DataError


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "hand", make_splits(), make_meta())


def _builds(monkeypatch) -> list:
    """Record every cache build (the real one still runs)."""
    calls = []
    real = frame_cache._build

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(frame_cache, "_build", counting)
    return calls


def _expected(arrays, meta, m):
    """The standardised frames of every row of ``m``, back to back, computed in numpy."""
    mean = np.asarray(meta.feature_mean[m], np.float32)
    std = np.asarray(meta.feature_std[m], np.float32)
    d = meta.dims[m]
    rows = [np.asarray(x, np.float32).reshape(-1, d) for x in arrays.frames[m]]
    return (np.concatenate(rows) - mean) / std


def test_first_open_builds_later_opens_map(dataset, tmp_path, monkeypatch):
    calls = _builds(monkeypatch)
    root = tmp_path / "cache"
    first = ParquetSplit(dataset / "train.parquet", root)
    second = ParquetSplit(dataset / "train.parquet", root)
    assert len(calls) == 1
    assert isinstance(second.frames["audio"].array, np.memmap)
    for m in MODALITIES:
        np.testing.assert_array_equal(first.frames[m].array, second.frames[m].array)
    idx = np.array([2, 0, 3])
    a, b = first.batch(idx), second.batch(idx)
    for m in MODALITIES:
        assert a.features[m].equal(b.features[m])


def test_cached_values_are_the_standardised_frames_and_a_zero_row(dataset, tmp_path):
    split = ParquetSplit(dataset / "valid.parquet", tmp_path / "cache")
    arrays = make_splits()["valid"]
    for m in MODALITIES:
        store = split.frames[m]
        np.testing.assert_allclose(
            store.frames, _expected(arrays, split.meta, m), rtol=1e-6, atol=1e-6
        )
        assert not store.array[-1].any()  # the padding row
        lengths = [len(x) for x in arrays.frames[m]]
        np.testing.assert_array_equal(np.diff(store.offsets), lengths)


def test_a_rewritten_file_rebuilds_its_cache(dataset, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    path = dataset / "test.parquet"
    before = ParquetSplit(path, root).batch(np.array([0, 1]))
    calls = _builds(monkeypatch)
    table = pq.read_table(path)
    # Same rows, one feature value changed: the stale cache must not be served.
    changed = make_splits()
    changed["test"].frames["text"][1][0, 0] += 5.0
    other = write_dataset(tmp_path / "other", changed, make_meta())
    shutil.copy(other / "test.parquet", path)
    assert pq.read_table(path).num_rows == table.num_rows
    after = ParquetSplit(path, root).batch(np.array([0, 1]))
    assert len(calls) == 1
    assert not after.features["text"].equal(before.features["text"])
    assert after.features["audio"].equal(before.features["audio"])


@pytest.mark.parametrize("damage", ["manifest", "values", "offsets"])
def test_a_damaged_cache_is_rebuilt(dataset, tmp_path, monkeypatch, damage):
    root = tmp_path / "cache"
    path = dataset / "train.parquet"
    good = ParquetSplit(path, root).batch(np.arange(4))
    target = cache_dir_for(path, root)
    if damage == "manifest":
        (target / "manifest.json").write_text("{not json")
    elif damage == "values":
        np.save(target / "vision.values.npy", np.zeros((3, 2), np.float32))
    else:
        (target / "audio.offsets.npy").unlink()
    calls = _builds(monkeypatch)
    split = ParquetSplit(path, root)
    again = split.batch(np.arange(4))
    assert len(calls) == 1
    for m in MODALITIES:
        assert again.features[m].equal(good.features[m])
    assert json.loads((target / "manifest.json").read_text())["digest"] == split.meta.digest


def test_bad_frames_in_a_later_chunk_name_the_split_row_and_leave_no_cache(
    dataset, tmp_path, monkeypatch
):
    path = dataset / "train.parquet"
    table = pq.read_table(path)
    col = table.column("vision").combine_chunks()
    flat = col.values.flatten().to_numpy().copy()
    offsets = col.offsets.to_numpy()
    flat[(offsets[3] + 1) * 4 + 2] = np.nan  # row 3, frame 1, feature 2

    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat), 4)
    bad = table.set_column(
        table.schema.get_field_index("vision"),
        table.schema.field("vision"),
        pa.ListArray.from_arrays(col.offsets, frames),
    )
    pq.write_table(bad, path)
    root = tmp_path / "cache"
    monkeypatch.setattr(frame_cache, "CHUNK_ROWS", 2)
    with pytest.raises(DataError) as info:
        ParquetSplit(path, root)
    # Rows stream in chunks of 2: row 3 is the second row of the second chunk.
    msg = str(info.value)
    assert msg.startswith(f"{path}: row 3 (id 'train-3'), field 'vision': non-finite"), msg
    assert "frame 1, feature 2" in msg
    assert [q for q in root.iterdir() if q.is_dir()] == []  # nothing half-built


def test_chunked_build_matches_a_single_chunk(dataset, tmp_path):
    path = dataset / "train.parquet"
    meta_split = ParquetSplit(path, tmp_path / "whole")
    lengths = {m: np.diff(meta_split.frames[m].offsets) for m in MODALITIES}
    present = {m: meta_split._present[m].numpy() for m in MODALITIES}
    small = frame_cache.load_frames(
        path, meta_split.meta, lengths, present, meta_split.ids, tmp_path / "small", chunk_rows=1
    )
    for m in MODALITIES:
        np.testing.assert_array_equal(small[m][0], meta_split.frames[m].array)
        np.testing.assert_array_equal(small[m][1], meta_split.frames[m].offsets)


def test_root_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(frame_cache.ENV_VAR, str(tmp_path / "env"))
    assert frame_cache_root() == tmp_path / "env"
    assert frame_cache_root(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv(frame_cache.ENV_VAR)
    assert frame_cache_root() == frame_cache_root(os.path.expanduser("~/.cache/robustmsa/frames"))


def test_building_prunes_the_caches_of_deleted_files(tmp_path):
    root = tmp_path / "cache"
    gone = write_dataset(tmp_path / "gone", make_splits(), make_meta())
    ParquetSplit(gone / "valid.parquet", root)
    kept = write_dataset(tmp_path / "kept", make_splits(), make_meta())
    ParquetSplit(kept / "valid.parquet", root)
    shutil.rmtree(gone)
    ParquetSplit(kept / "test.parquet", root)  # a build: prunes
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(
        [
            cache_dir_for(kept / "valid.parquet", root).name,
            cache_dir_for(kept / "test.parquet", root).name,
        ]
    )


def test_concurrent_openers_of_a_new_cache_all_succeed(dataset, tmp_path):
    """Fault injection by concurrency: four processes open one split whose cache does not
    exist yet (as two DDP ranks do); one builds, the others wait and map the same cache."""
    import multiprocessing

    # The worker function lives in a module on the tests' path: a spawned child cannot import
    # this test module by its package name when pytest runs as the `pytest` console script.
    from frame_cache_workers import open_and_sum

    root = tmp_path / "cache"
    path = dataset / "train.parquet"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        sums = pool.map(open_and_sum, [(path, root)] * 4)
    assert all(s == sums[0] for s in sums)
    assert [q.name for q in root.iterdir() if q.is_dir()] == [cache_dir_for(path, root).name]
