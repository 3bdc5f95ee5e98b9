"""The writer and the reader refuse corrupt or inconsistent data (docs/architecture.md §2,
"Data layer").

Table-driven: each case corrupts a good hand-written dataset, either the `SplitArrays` before
`write_dataset` (write cases) or the Parquet files after it, rewritten with pyarrow so that the
writer's checks are bypassed (read cases). Every case names the `DataError` message fragments
that locate the problem: the file (or output directory and split), the row and id where there
is one, and the field.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import ParquetSplit, SplitArrays, open_dataset, write_dataset
from robustmsa.data.schema import METADATA_KEY, SPLITS, DatasetMeta
from robustmsa.errors import DataError

DIMS = {"text": 3, "audio": 2, "vision": 4}
# Frames per sample; 0 = the modality is naturally absent for that sample.
LENGTHS = {
    "train": {"text": [2, 5, 1, 3], "audio": [4, 0, 2, 1], "vision": [3, 3, 6, 2]},
    "valid": {"text": [4, 1, 2], "audio": [0, 3, 0], "vision": [2, 5, 1]},
    "test": {"text": [1, 2], "audio": [0, 0], "vision": [2, 1]},
}


def good_splits() -> dict[str, SplitArrays]:
    rng = np.random.default_rng(0)
    splits = {}
    for name, lens in LENGTHS.items():
        n = len(lens["text"])
        splits[name] = SplitArrays(
            ids=[f"{name}-{i}" for i in range(n)],
            labels=rng.uniform(-3, 3, n).astype(np.float32),
            frames={
                m: [rng.standard_normal((t, DIMS[m])).astype(np.float32) for t in lens[m]]
                for m in MODALITIES
            },
            present={m: np.array([t > 0 for t in lens[m]]) for m in MODALITIES},
            text_ids=[np.array([101, *range(7, 7 + i), 102]) for i in range(n)],
            raw_text=[f"{name} clip {i}" for i in range(n)],
        )
    return splits


def good_meta() -> DatasetMeta:
    return DatasetMeta(name="hand", dims=dict(DIMS), label_range=(-3.0, 3.0), source="test")


@pytest.fixture(scope="module")
def good_root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("good") / "ds", good_splits(), good_meta())


def test_good_dataset_opens(good_root):
    ds = open_dataset(good_root)
    assert [len(ds[s]) for s in SPLITS] == [4, 3, 2]


# ------------------------------------------------------------------------------ write cases

Splits = dict[str, SplitArrays]


def _frames(split: str, m: str, row: int, x: np.ndarray) -> Callable[[Splits], None]:
    def corrupt(s: Splits) -> None:
        s[split].frames[m][row] = x

    return corrupt


def _set_value(split: str, m: str, row: int, t: int, j: int, v: float):
    def corrupt(s: Splits) -> None:
        s[split].frames[m][row][t, j] = v

    return corrupt


def _label(split: str, row: int, v: float):
    def corrupt(s: Splits) -> None:
        s[split].labels[row] = v

    return corrupt


def _id(split: str, row: int, v: str):
    def corrupt(s: Splits) -> None:
        s[split].ids[row] = v

    return corrupt


def _present(split: str, m: str, row: int, v: bool):
    def corrupt(s: Splits) -> None:
        s[split].present[m][row] = v

    return corrupt


def _empty_valid(s: Splits) -> None:
    s["valid"] = SplitArrays(
        ids=[],
        labels=np.zeros(0, np.float32),
        frames={m: [] for m in MODALITIES},
        present={m: np.zeros(0, bool) for m in MODALITIES},
        text_ids=[],
        raw_text=[],
    )


def _drop_last_vision_row(s: Splits) -> None:
    s["train"].frames["vision"] = s["train"].frames["vision"][:-1]


def _short_labels(s: Splits) -> None:
    s["test"].labels = s["test"].labels[:1]


def _negative_token(s: Splits) -> None:
    s["valid"].text_ids[2] = np.array([101, -5, 102])


def _meta_without_audio(_: Splits, meta: DatasetMeta) -> None:
    del meta.dims["audio"]


def _meta_empty_range(_: Splits, meta: DatasetMeta) -> None:
    meta.label_range = (1.0, 1.0)


TRAIN = "split 'train'"
VALID = "split 'valid'"
TEST = "split 'test'"

# name: (corrupt the splits, or (splits, meta)), expected message fragments
WRITE_CASES: dict[str, tuple[Callable, list[str]]] = {
    "dims differ across rows": (
        _frames("train", "audio", 2, np.zeros((2, 3), np.float32)),
        [TRAIN, "row 2 (id 'train-2')", "field 'audio'", "(2, 3)", "(T, 2)"],
    ),
    "nan feature": (
        _set_value("valid", "vision", 1, 3, 2, np.nan),
        [VALID, "row 1 (id 'valid-1')", "field 'vision'", "nan", "frame 3, feature 2"],
    ),
    "inf feature": (
        _set_value("train", "text", 3, 0, 1, -np.inf),
        [TRAIN, "row 3 (id 'train-3')", "field 'text'", "-inf"],
    ),
    "label outside range": (
        _label("test", 1, 3.5),
        [TEST, "row 1 (id 'test-1')", "field 'label'", "3.5 outside the label range"],
    ),
    "nan label": (
        _label("train", 0, np.nan),
        [TRAIN, "row 0 (id 'train-0')", "field 'label'", "not finite"],
    ),
    "duplicate id in split": (
        _id("valid", 2, "valid-0"),
        [VALID, "row 2", "field 'id'", "duplicate id 'valid-0' (also at row 0)"],
    ),
    "duplicate id across splits": (
        _id("test", 1, "train-3"),
        [TEST, "row 1 (id 'train-3')", "field 'id'", "across splits", "split 'train'"],
    ),
    "empty split": (_empty_valid, [VALID, "empty split"]),
    "present without frames": (
        _present("valid", "audio", 0, True),
        [VALID, "row 0 (id 'valid-0')", "field 'audio_present'", "no frames"],
    ),
    "absent with frames": (
        _present("train", "vision", 1, False),
        [TRAIN, "row 1 (id 'train-1')", "field 'vision_present'", "has 3 frames"],
    ),
    "modality disagrees in sample count": (
        _drop_last_vision_row,
        [TRAIN, "field 'vision'", "has 3 rows but 'id' has 4"],
    ),
    "labels disagree in sample count": (
        _short_labels,
        [TEST, "field 'label'", "has 1 rows but 'id' has 2"],
    ),
    "negative token id": (
        _negative_token,
        [VALID, "row 2 (id 'valid-2')", "field 'text_ids'", "-5"],
    ),
    "metadata dims missing a modality": (
        _meta_without_audio,
        ["metadata 'dims'", "audio"],
    ),
    "empty label range": (_meta_empty_range, ["metadata 'label_range'", "lo < hi"]),
}


@pytest.mark.parametrize("case", list(WRITE_CASES))
def test_write_refuses_bad_data_and_leaves_nothing(tmp_path, monkeypatch, case):
    corrupt, fragments = WRITE_CASES[case]
    splits, meta = good_splits(), good_meta()
    if corrupt.__code__.co_argcount == 2:
        corrupt(splits, meta)
    else:
        corrupt(splits)
    writes = []
    real = pq.write_table
    monkeypatch.setattr(pq, "write_table", lambda *a, **k: writes.append(a) or real(*a, **k))
    parent = tmp_path / "parent"
    out = parent / "ds"
    with pytest.raises(DataError) as info:
        write_dataset(out, splits, meta)
    msg = str(info.value)
    assert msg.startswith(f"{out}: "), msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    assert writes == []  # refused before any file was written
    assert not out.exists()
    # No temporary directory (nor anything else) next to the target.
    assert not parent.exists() or list(parent.iterdir()) == []


def test_write_message_format(tmp_path):
    splits = good_splits()
    splits["valid"].frames["audio"][1][2, 0] = np.nan
    out = tmp_path / "ds"
    with pytest.raises(DataError) as info:
        write_dataset(out, splits, good_meta())
    assert str(info.value).startswith(
        f"{out}: split 'valid', row 1 (id 'valid-1'), field 'audio': non-finite"
    )


# ------------------------------------------------------------------------------- read cases


def _rebuild_frames(table: pa.Table, m: str, values: np.ndarray, d: int) -> pa.Array:
    col = table.column(m).combine_chunks()
    frames = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), d)
    return pa.ListArray.from_arrays(col.offsets, frames)


def _replace(table: pa.Table, name: str, array: pa.Array, typ=None) -> pa.Table:
    i = table.column_names.index(name)
    field = pa.field(name, typ or array.type, table.schema.field(name).nullable)
    return table.set_column(i, field, array)


def _feature(m: str, row: int, t: int, j: int, v: float):
    def corrupt(table: pa.Table) -> pa.Table:
        col = table.column(m).combine_chunks()
        d = DIMS[m]
        flat = col.values.flatten().to_numpy().copy()
        flat[(col.offsets[row].as_py() + t) * d + j] = v
        return _replace(table, m, _rebuild_frames(table, m, flat, d))

    return corrupt


def _frame_size_one(m: str):
    """Every frame of ``m`` split into ``d`` frames of one feature (offsets scaled)."""

    def corrupt(table: pa.Table) -> pa.Table:
        col = table.column(m).combine_chunks()
        d = DIMS[m]
        flat = col.values.flatten().to_numpy()
        frames = pa.FixedSizeListArray.from_arrays(pa.array(flat), 1)
        offsets = pa.array(col.offsets.to_numpy() * d)
        return _replace(table, m, pa.ListArray.from_arrays(offsets, frames))

    return corrupt


def _numbers(name: str, row: int, v, dtype):
    def corrupt(table: pa.Table) -> pa.Table:
        arr = table.column(name).to_numpy(zero_copy_only=False).astype(dtype).copy()
        arr[row] = v
        return _replace(table, name, pa.array(arr), table.schema.field(name).type)

    return corrupt


def _null_label(table: pa.Table) -> pa.Table:
    labels = table.column("label").to_pylist()
    labels[2] = None
    return _replace(table, "label", pa.array(labels, pa.float32()))


def _set_id(row: int, v: str):
    def corrupt(table: pa.Table) -> pa.Table:
        ids = table.column("id").to_pylist()
        ids[row] = v
        return _replace(table, "id", pa.array(ids, pa.string()))

    return corrupt


def _negative_text_id(table: pa.Table) -> pa.Table:
    ids = table.column("text_ids").to_pylist()
    ids[1][0] = -1
    return _replace(table, "text_ids", pa.array(ids, pa.list_(pa.int32())))


def _null_text_id(table: pa.Table) -> pa.Table:
    ids = table.column("text_ids").to_pylist()
    ids[2][1] = None
    return _replace(table, "text_ids", pa.array(ids, pa.list_(pa.int32())))


def _label_as_double(table: pa.Table) -> pa.Table:
    arr = pa.array(table.column("label").to_numpy().astype(np.float64))
    return _replace(table, "label", arr)


def _with_meta(edit: Callable[[dict], None]):
    def corrupt(table: pa.Table) -> pa.Table:
        meta = json.loads(table.schema.metadata[METADATA_KEY])
        edit(meta)
        return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})

    return corrupt


def _digest(meta: dict) -> None:
    meta["digest"] = "0123456789abcdef"


def _short_std(meta: dict) -> None:
    meta["feature_std"]["vision"] = meta["feature_std"]["vision"][:3]


def _no_vision_dim(meta: dict) -> None:
    del meta["dims"]["vision"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not parquet at all")


def _add_column(table: pa.Table) -> pa.Table:
    return table.append_column("extra", pa.array(np.zeros(table.num_rows)))


# name: (split file, corrupt the table (or the file: "file" in the name), fragments); the
# file's full path is always expected in the message as well.
READ_CASES: dict[str, tuple[str, Callable, list[str]]] = {
    "nan feature": (
        "valid",
        _feature("audio", 1, 2, 1, np.nan),
        ["row 1 (id 'valid-1')", "field 'audio'", "non-finite", "nan", "frame 2, feature 1"],
    ),
    "inf feature": (
        "train",
        _feature("vision", 2, 5, 3, np.inf),
        ["row 2 (id 'train-2')", "field 'vision'", "inf", "frame 5, feature 3"],
    ),
    "frame dims differ from metadata": (
        "test",
        _frame_size_one("vision"),
        ["field 'vision'", "frames of 1 features, expected 4"],
    ),
    "label outside range": (
        "test",
        _numbers("label", 1, -3.25, np.float32),
        ["row 1 (id 'test-1')", "field 'label'", "-3.25 outside the label range"],
    ),
    "nan label": (
        "train",
        _numbers("label", 3, np.nan, np.float32),
        ["row 3 (id 'train-3')", "field 'label'", "nan is not finite"],
    ),
    "null label": ("valid", _null_label, ["row 2 (id 'valid-2')", "field 'label'", "null"]),
    "length longer than the sequence": (
        "train",
        _numbers("text_length", 1, 9, np.int32),
        ["row 1 (id 'train-1')", "field 'text_length'", "9 is longer than the sequence (5"],
    ),
    "length shorter than the frames": (
        "valid",
        _numbers("vision_length", 2, 0, np.int32),
        ["row 2 (id 'valid-2')", "field 'vision_length'", "0 disagrees with the sequence (1"],
    ),
    "duplicate id in split": (
        "train",
        _set_id(3, "train-1"),
        ["row 3 (id 'train-1')", "field 'id'", "duplicate id 'train-1' (also at row 1)"],
    ),
    # Any edit of a file after it was written is caught by its content digest first
    # (robustmsa.data.content_digest); the cross-split check stands for datasets without one
    # (test_duplicate_id_across_splits_without_content_digests).
    "duplicate id across splits": (
        "valid",
        _set_id(2, "train-1"),
        ["content differs from the digest"],
    ),
    "empty id": ("test", _set_id(0, ""), ["row 0", "field 'id'", "empty id"]),
    "empty split": ("valid", lambda t: t.slice(0, 0), ["empty split"]),
    "missing column": (
        "train",
        lambda t: t.drop_columns(["vision_length"]),
        ["missing columns ['vision_length']"],
    ),
    "extra column": ("test", _add_column, ["unexpected columns ['extra']"]),
    "wrong column type": (
        "valid",
        _label_as_double,
        ["field 'label'", "column type double, expected float"],
    ),
    "present without frames": (
        "train",
        _numbers("audio_present", 1, True, bool),
        ["row 1 (id 'train-1')", "field 'audio_present'", "no frames"],
    ),
    "absent with frames": (
        "valid",
        _numbers("text_present", 0, False, bool),
        ["row 0 (id 'valid-0')", "field 'text_present'", "has 4 frames"],
    ),
    "negative token id": (
        "test",
        _negative_text_id,
        ["row 1 (id 'test-1')", "field 'text_ids'", "negative token id -1"],
    ),
    "null token id": (
        "train",
        _null_text_id,
        ["row 2 (id 'train-2')", "field 'text_ids'", "null token id"],
    ),
    "metadata missing": (
        "valid",
        lambda t: t.replace_schema_metadata(None),
        ["no robustmsa metadata"],
    ),
    "metadata digest differs across splits": (
        "test",
        _with_meta(_digest),
        ["field 'digest'", "0123456789abcdef", "train.parquet", "different datasets"],
    ),
    "metadata std length differs from dims": (
        "train",
        _with_meta(_short_std),
        ["metadata 'feature_std'", "vision", "expected (4,)"],
    ),
    "metadata dims missing a modality": (
        "valid",
        _with_meta(_no_vision_dim),
        ["metadata 'dims'", "missing ['vision']"],
    ),
    "truncated file": ("train", _truncate, ["not a readable Parquet file"]),
    "garbage file": ("test", _garbage, ["not a readable Parquet file"]),
}
FILE_CASES = {"truncated file", "garbage file"}


@pytest.mark.parametrize("case", list(READ_CASES))
def test_read_refuses_corrupt_files(tmp_path, good_root, case):
    split, corrupt, fragments = READ_CASES[case]
    root = tmp_path / "ds"
    shutil.copytree(good_root, root)
    path = root / f"{split}.parquet"
    if case in FILE_CASES:
        corrupt(path)
    else:
        pq.write_table(corrupt(pq.read_table(path)), path)
    with pytest.raises(DataError) as info:
        open_dataset(root)
    msg = str(info.value)
    assert msg.startswith(f"{path}: "), msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_duplicate_id_across_splits_without_content_digests(tmp_path, good_root):
    """A dataset from a writer that records no content digests (or from before them): the
    reader's own cross-split check names the duplicate."""
    root = tmp_path / "ds"
    shutil.copytree(good_root, root)

    def drop_digests(meta: dict) -> None:
        meta["content_digests"] = {}

    for split in ("train", "valid", "test"):
        path = root / f"{split}.parquet"
        table = _with_meta(drop_digests)(pq.read_table(path))
        if split == "valid":
            table = _set_id(2, "train-1")(table)
        pq.write_table(table, path)
    with pytest.raises(DataError) as info:
        open_dataset(root)
    msg = str(info.value)
    assert msg.startswith(f"{root / 'valid.parquet'}: "), msg
    for fragment in ["row 2 (id 'train-1')", "field 'id'", "across splits", "train.parquet"]:
        assert fragment in msg, (fragment, msg)


def test_read_message_format(tmp_path, good_root):
    path = tmp_path / "valid.parquet"
    table = _feature("vision", 1, 4, 0, np.nan)(pq.read_table(good_root / "valid.parquet"))
    pq.write_table(table, path)
    with pytest.raises(DataError) as info:
        ParquetSplit(path)
    assert str(info.value).startswith(
        f"{path}: row 1 (id 'valid-1'), field 'vision': non-finite feature value nan"
    )


def test_multiple_row_groups_validate_like_one(tmp_path, good_root):
    """Chunked columns (one chunk per row group) are checked with the right rows."""
    path = tmp_path / "train.parquet"
    table = _feature("audio", 3, 0, 1, np.inf)(pq.read_table(good_root / "train.parquet"))
    pq.write_table(table, path, row_group_size=1)
    with pytest.raises(DataError, match=r"row 3 \(id 'train-3'\), field 'audio'"):
        ParquetSplit(path)


def test_good_splits_are_not_modified_by_validation(tmp_path):
    splits = good_splits()
    before = copy.deepcopy(splits)
    write_dataset(tmp_path / "ds", splits, good_meta())
    for name in SPLITS:
        assert splits[name].ids == before[name].ids
        for m in MODALITIES:
            for a, b in zip(splits[name].frames[m], before[name].frames[m], strict=True):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("digests", [True, False], ids=["recorded", "none recorded"])
def test_an_edited_frame_is_caught_by_the_split_content_digest(tmp_path, good_root, digests):
    """A finite, in-range change to one feature value passes every other check: only the
    content digest the writer recorded tells the file was changed. A dataset that recorded
    none is read as it is."""
    root = tmp_path / "ds"
    shutil.copytree(good_root, root)
    path = root / "train.parquet"
    table = _feature("audio", 1, 0, 0, 0.123)(pq.read_table(path))
    if not digests:
        for split in SPLITS:
            other = root / f"{split}.parquet"
            source = table if split == "train" else pq.read_table(other)
            pq.write_table(_with_meta(lambda m: m.update(content_digests={}))(source), other)
    else:
        pq.write_table(table, path)
    if digests:
        with pytest.raises(DataError, match=rf"^{path}: content differs from the digest"):
            open_dataset(root)
    else:
        assert len(open_dataset(root)["train"]) == 4


def test_the_digest_of_a_written_table_is_the_one_recorded(good_root):
    from robustmsa.data.content_digest import table_digest

    meta = json.loads(pq.read_schema(good_root / "train.parquet").metadata[METADATA_KEY])
    for split in SPLITS:
        table = pq.read_table(good_root / f"{split}.parquet")
        assert table_digest(split, table) == meta["content_digests"][split]
