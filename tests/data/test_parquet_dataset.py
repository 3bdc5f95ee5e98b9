"""Parquet writer/reader round trip on a hand-written dataset (docs/architecture.md §2).

The dataset is small enough that every expected value (train statistics, standardised frames,
padding) is computed here directly in numpy from the arrays that were written.
"""

from __future__ import annotations

import copy

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from handmade import DIMS, LENGTHS, make_meta, make_splits
from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import ParquetSplit, SplitArrays, open_dataset, write_dataset
from robustmsa.data.schema import METADATA_KEY, DatasetMeta
from robustmsa.errors import DataError


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    splits = make_splits()
    root = write_dataset(tmp_path_factory.mktemp("pq") / "hand", splits, make_meta())
    return root, splits


def train_stats(splits):
    """Mean and population std over the valid train frames; std 1 where it is (near) 0."""
    mean, std = {}, {}
    for m in MODALITIES:
        allx = np.concatenate([x for x in splits["train"].frames[m] if len(x)]).astype(np.float64)
        mu = allx.sum(0) / len(allx)
        sd = np.sqrt(((allx - mu) ** 2).sum(0) / len(allx))
        sd[sd < 1e-8] = 1.0
        mean[m], std[m] = mu, sd
    return mean, std


def test_write_returns_dir_with_three_files(written):
    root, _ = written
    assert root.is_dir()
    assert sorted(p.name for p in root.iterdir()) == [
        "test.parquet",
        "train.parquet",
        "valid.parquet",
    ]


def test_ids_labels_present_and_lengths_round_trip(written):
    root, splits = written
    ds = open_dataset(root)
    assert set(ds) == {"train", "valid", "test"}
    for name, split in ds.items():
        src = splits[name]
        n = len(src.ids)
        assert len(split) == n
        assert split.ids == src.ids
        assert split.labels.dtype == torch.float32
        np.testing.assert_array_equal(split.labels.numpy(), src.labels)
        b = split.batch(list(range(n)))
        assert b.ids == src.ids
        np.testing.assert_array_equal(b.labels.numpy(), src.labels)
        for m in MODALITIES:
            assert b.present[m].dtype == torch.bool
            assert b.present[m].tolist() == [t > 0 for t in LENGTHS[name][m]]
            assert b.masks[m].dtype == torch.bool
            assert b.masks[m].sum(1).tolist() == LENGTHS[name][m]
            # Masks are a valid prefix: True exactly on the first length frames.
            for i, t in enumerate(LENGTHS[name][m]):
                assert b.masks[m][i, :t].all()
                assert not b.masks[m][i, t:].any()


def test_meta_round_trips_with_train_stats(written):
    root, splits = written
    meta = open_dataset(root)["valid"].meta
    assert meta.name == "hand"
    assert meta.dims == DIMS
    assert meta.label_range == (-3.0, 3.0)
    assert meta.source == "test"
    assert len(meta.digest) == 16
    mean, std = train_stats(splits)
    for m in MODALITIES:
        np.testing.assert_allclose(meta.feature_mean[m], mean[m], rtol=1e-12)
        np.testing.assert_allclose(meta.feature_std[m], std[m], rtol=1e-12)
    # The constant vision feature keeps std 1 (centred, not divided by ~0).
    assert meta.feature_std["vision"][0] == 1.0


@pytest.mark.parametrize("name", ["train", "valid", "test"])
def test_features_standardised_with_train_stats_and_zero_padded(written, name):
    root, splits = written
    split = open_dataset(root)[name]
    mean, std = train_stats(splits)
    n = len(splits[name].ids)
    b = split.batch(list(range(n)))
    for m in MODALITIES:
        lens = LENGTHS[name][m]
        x = b.features[m]
        assert x.dtype == torch.float32
        assert x.shape == (n, max(max(lens), 1), DIMS[m])
        for i, t in enumerate(lens):
            raw = splits[name].frames[m][i].astype(np.float64)
            expected = (raw - mean[m]) / std[m]
            np.testing.assert_allclose(x[i, :t].numpy(), expected, rtol=1e-5, atol=1e-5)
            assert torch.count_nonzero(x[i, t:]) == 0  # padding and absent samples are zero


def test_constant_feature_is_centred(written):
    root, _ = written
    b = open_dataset(root)["valid"].batch([0, 1, 2])
    valid = b.masks["vision"]
    # 7.5 everywhere in every split, so 7.5 - mean(=7.5) = 0 on every valid frame.
    assert torch.count_nonzero(b.features["vision"][valid][:, 0]) == 0


def test_train_frames_have_zero_mean_unit_std(written):
    root, _ = written
    train = open_dataset(root)["train"]
    b = train.batch(list(range(len(train))))
    for m in MODALITIES:
        frames = b.features[m][b.masks[m]].double().numpy()
        np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-5)
        sd = frames.std(0)
        if m == "vision":
            assert sd[0] == 0.0
            sd = sd[1:]
        np.testing.assert_allclose(sd, 1.0, atol=1e-5)


def test_batch_pads_to_longest_in_batch(written):
    root, _ = written
    valid = open_dataset(root)["valid"]
    # valid lengths: text [4, 1, 2], audio [0, 3, 0], vision [2, 5, 1]
    b = valid.batch([0, 2])
    assert b.features["text"].shape[1] == 4
    assert b.features["vision"].shape[1] == 2
    # Both samples lack audio: one (empty) frame slot, all masked, zero, absent.
    assert b.features["audio"].shape == (2, 1, DIMS["audio"])
    assert not b.masks["audio"].any()
    assert not b.present["audio"].any()
    assert torch.count_nonzero(b.features["audio"]) == 0
    b = valid.batch([2])
    assert b.features["text"].shape[1] == 2
    assert b.features["vision"].shape[1] == 1


def test_batch_follows_index_order(written):
    root, _ = written
    valid = open_dataset(root)["valid"]
    fwd = valid.batch([0, 1, 2])
    rev = valid.batch([2, 1, 0])
    assert rev.ids == fwd.ids[::-1]
    assert torch.equal(rev.labels, fwd.labels.flip(0))
    for m in MODALITIES:
        assert torch.equal(rev.masks[m], fwd.masks[m].flip(0))
        assert torch.equal(rev.features[m], fwd.features[m].flip(0))
        assert torch.equal(rev.present[m], fwd.present[m].flip(0))


def _pad(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, 0, 0, t - x.shape[1])) if x.ndim == 3 else x


@pytest.mark.parametrize("bs", [1, 2, 3, 4])
def test_batches_concatenate_to_one_big_batch(written, bs):
    root, _ = written
    train = open_dataset(root)["train"]
    big = train.batch(list(range(len(train))))
    parts = list(train.batches(bs))
    assert [p.size for p in parts] == [min(bs, 4 - s) for s in range(0, 4, bs)]
    assert [i for p in parts for i in p.ids] == big.ids
    assert torch.equal(torch.cat([p.labels for p in parts]), big.labels)
    for m in MODALITIES:
        t = big.features[m].shape[1]
        feats = torch.cat([_pad(p.features[m], t) for p in parts])
        masks = torch.cat(
            [torch.nn.functional.pad(p.masks[m], (0, t - p.masks[m].shape[1])) for p in parts]
        )
        assert torch.equal(feats, big.features[m])
        assert torch.equal(masks, big.masks[m])
        assert torch.equal(torch.cat([p.present[m] for p in parts]), big.present[m])


def test_batches_in_given_order(written):
    root, _ = written
    train = open_dataset(root)["train"]
    order = np.array([3, 0, 2, 1])
    ids = [i for b in train.batches(3, order) for i in b.ids]
    assert ids == [f"train-{i}" for i in order]


def test_digest_stable_for_identical_content(tmp_path):
    a = write_dataset(tmp_path / "a", make_splits(0), make_meta())
    b = write_dataset(tmp_path / "b", make_splits(0), make_meta())
    da = open_dataset(a)["train"].meta.digest
    assert da == open_dataset(b)["test"].meta.digest
    # Every split of one dataset carries the same digest.
    assert {s.meta.digest for s in open_dataset(a).values()} == {da}


@pytest.mark.parametrize(
    "change",
    ["frame_value", "label", "id", "present", "test_split"],
)
def test_digest_changes_when_one_value_changes(tmp_path, change):
    base = make_splits(0)
    changed = copy.deepcopy(base)
    if change == "frame_value":
        changed["valid"].frames["audio"][1][2, 1] += 1e-3
    elif change == "label":
        changed["train"].labels[3] = np.float32(changed["train"].labels[3] + 0.5)
    elif change == "id":
        changed["train"].ids[0] = "renamed"
    elif change == "present":
        # The sample loses its vision frames and becomes absent (present == has frames).
        changed["test"].frames["vision"][1] = np.zeros((0, DIMS["vision"]), np.float32)
        changed["test"].present["vision"][1] = False
    else:
        changed["test"].frames["text"][1][0, 0] = -1.0
    a = write_dataset(tmp_path / "a", base, make_meta())
    b = write_dataset(tmp_path / "b", changed, make_meta())
    assert open_dataset(a)["train"].meta.digest != open_dataset(b)["train"].meta.digest


def test_write_over_existing_dir_raises(tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="exists") as info:
        write_dataset(out, make_splits(), make_meta())
    assert str(out) in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    real = pq.write_table
    calls = []

    def failing(table, where, *args, **kwargs):
        calls.append(str(where))
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing)
    parent = tmp_path / "parent"
    with pytest.raises(OSError, match="simulated"):
        write_dataset(parent / "ds", make_splits(), make_meta())
    assert len(calls) == 2
    assert not (parent / "ds").exists()
    # No temporary directory (or anything else) is left next to the target.
    assert list(parent.iterdir()) == []


def test_open_missing_dir_raises_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        open_dataset(missing)
    assert str(missing) in str(info.value)


def test_open_dir_missing_a_split_file_raises(tmp_path, written):
    root, _ = written
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("train", "test"):
        (partial / f"{name}.parquet").write_bytes((root / f"{name}.parquet").read_bytes())
    with pytest.raises(DataError) as info:
        open_dataset(partial)
    assert str(partial / "valid.parquet") in str(info.value)


def test_truncated_file_raises_naming_it(tmp_path, written):
    root, _ = written
    copy_dir = tmp_path / "trunc"
    copy_dir.mkdir()
    for name in ("train", "valid", "test"):
        data = (root / f"{name}.parquet").read_bytes()
        if name == "valid":
            data = data[: len(data) // 2]
        (copy_dir / f"{name}.parquet").write_bytes(data)
    with pytest.raises(DataError) as info:
        open_dataset(copy_dir)
    assert str(copy_dir / "valid.parquet") in str(info.value)


def test_file_without_robustmsa_metadata_raises(tmp_path, written):
    root, _ = written
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("train", "valid", "test"):
        table = pq.read_table(root / f"{name}.parquet")
        if name == "train":
            table = table.replace_schema_metadata(None)
        pq.write_table(table, bare / f"{name}.parquet")
    with pytest.raises(DataError, match="metadata") as info:
        open_dataset(bare)
    assert str(bare / "train.parquet") in str(info.value)


def test_file_missing_a_column_raises(tmp_path, written):
    root, _ = written
    path = tmp_path / "train.parquet"
    table = pq.read_table(root / "train.parquet").drop_columns(["audio_present"])
    pq.write_table(table, path)
    with pytest.raises(DataError, match="audio_present") as info:
        ParquetSplit(path)
    assert str(path) in str(info.value)


def test_arrow_schema_columns_as_documented(written):
    root, _ = written
    schema = pq.read_schema(root / "train.parquet")
    # schema.py: id (string), label (float32); per modality m in text, audio, vision:
    # m (list of fixed-size lists of d_m float32), m_length (int32), m_present (bool).
    expected = [("id", pa.string()), ("label", pa.float32())]
    for m in ("text", "audio", "vision"):
        expected += [
            (m, pa.list_(pa.list_(pa.float32(), DIMS[m]))),
            (f"{m}_length", pa.int32()),
            (f"{m}_present", pa.bool_()),
        ]
    assert schema.names == [n for n, _ in expected]
    for name, typ in expected:
        assert schema.field(name).type == typ, name
    assert not schema.field("id").nullable
    meta = DatasetMeta.from_json(schema.metadata[METADATA_KEY])
    assert meta.dims == DIMS


def test_length_column_matches_frames(written):
    root, _ = written
    table = pq.read_table(root / "valid.parquet")
    for m in MODALITIES:
        assert table.column(f"{m}_length").to_pylist() == LENGTHS["valid"][m]
        assert [len(x) for x in table.column(m).to_pylist()] == LENGTHS["valid"][m]
    # Raw (unstandardised) values are what is on disk.
    first = np.asarray(table.column("text").to_pylist()[0], np.float32)
    np.testing.assert_array_equal(first, make_splits()["valid"].frames["text"][0])


def test_multiple_row_groups_read_the_same(tmp_path, written):
    root, _ = written
    table = pq.read_table(root / "train.parquet")
    path = tmp_path / "train.parquet"
    pq.write_table(table, path, row_group_size=1)
    assert pq.ParquetFile(path).num_row_groups == 4
    a = open_dataset(root)["train"].batch([3, 0, 2, 1])
    b = ParquetSplit(path).batch([3, 0, 2, 1])
    assert a.ids == b.ids
    for m in MODALITIES:
        assert torch.equal(a.features[m], b.features[m])
        assert torch.equal(a.masks[m], b.masks[m])
        assert torch.equal(a.present[m], b.present[m])


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"name": "x"}', b"[1, 2]"],
    ids=["invalid-json", "missing-fields", "not-an-object"],
)
def test_corrupt_robustmsa_metadata_raises_data_error(tmp_path, written, raw):
    root, _ = written
    path = tmp_path / "valid.parquet"
    table = pq.read_table(root / "valid.parquet")
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: raw}), path)
    with pytest.raises(DataError) as info:
        ParquetSplit(path)
    assert str(path) in str(info.value)


def test_optional_text_ids_and_raw_text_round_trip(tmp_path):
    def split(n, offset):
        return SplitArrays(
            ids=[f"s{offset + i}" for i in range(n)],
            labels=np.zeros(n, np.float32),
            frames={m: [np.ones((2, 3), np.float32)] * n for m in MODALITIES},
            present={m: np.ones(n, bool) for m in MODALITIES},
            text_ids=[np.array([101, 7 + i, 102]) for i in range(n)],
            raw_text=[f"clip {offset + i}" for i in range(n)],
        )

    meta = DatasetMeta("opt", {m: 3 for m in MODALITIES}, (-3.0, 3.0), "test")
    splits = {"train": split(3, 0), "valid": split(2, 10), "test": split(2, 20)}
    root = write_dataset(tmp_path / "ds", splits, meta)
    table = pq.read_table(root / "valid.parquet")
    assert table.column("text_ids").to_pylist() == [[101, 7, 102], [101, 8, 102]]
    assert table.column("raw_text").to_pylist() == ["clip 10", "clip 11"]
    assert open_dataset(root)["valid"].meta.optional_columns == ["text_ids", "raw_text"]
    mixed = dict(splits, test=SplitArrays(**{**split(2, 20).__dict__, "raw_text": None}))
    with pytest.raises(DataError, match="disagree on optional columns"):
        write_dataset(tmp_path / "mixed", mixed, meta)
    assert not (tmp_path / "mixed").exists()
