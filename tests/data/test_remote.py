"""Datasets and storage named by URI (`robustmsa.data.remote`)."""

from __future__ import annotations

import filecmp

import fsspec
import pyarrow.fs as pafs
import pytest
from robustmsa.data import remote
from robustmsa.data.parquet import open_dataset
from robustmsa.data.remote import check_storage, is_uri, stage_dataset
from robustmsa.data.source import dataset_dir
from robustmsa.errors import DataError


def test_uris_and_plain_paths():
    assert is_uri("s3://bucket/data") and is_uri("file:///tmp/x") and is_uri("gs://b/p")
    assert not is_uri("/tmp/x") and not is_uri("data/mosi") and not is_uri(None)


def test_a_file_uri_resolves_to_the_directory_itself(tiny_dataset, tmp_path):
    uri = tiny_dataset.resolve().as_uri()
    assert uri.startswith("file://")
    local = dataset_dir("parquet", path=uri, preset="tiny", seed=0, cache_dir=str(tmp_path))
    assert local == tiny_dataset.resolve()
    assert not (tmp_path / "remote").exists()  # read in place, nothing staged
    digest = open_dataset(tiny_dataset)["train"].meta.digest
    assert open_dataset(local)["train"].meta.digest == digest
    with pytest.raises(DataError, match=r"^data\.path: dataset directory 'file:///no/such'"):
        stage_dataset("file:///no/such", tmp_path)


def test_a_scheme_without_a_filesystem_is_named(tmp_path):
    with pytest.raises(DataError, match=r"^data\.path: nope://b/d: no usable pyarrow filesystem"):
        stage_dataset("nope://b/d", tmp_path)
    with pytest.raises(DataError, match=r"^study\.storage_path: nope://b/r: no usable"):
        check_storage("nope://b/r")
    check_storage("relative/results")  # a local path: Tune creates it
    check_storage((tmp_path / "results").as_uri())
    assert (tmp_path / "results").is_dir()


@pytest.fixture
def memory_bucket(monkeypatch, tiny_dataset):
    """A remote filesystem without a server: fsspec's in-memory one, behind pyarrow's
    ``PyFileSystem``, serving ``mem://bucket/tiny`` (the dataset's three split files)."""
    memory = fsspec.filesystem("memory")
    memory.store.clear()
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(memory))
    for split in ("train", "valid", "test"):
        fs.create_dir("bucket/tiny")
        with fs.open_output_stream(f"bucket/tiny/{split}.parquet") as out:
            out.write((tiny_dataset / f"{split}.parquet").read_bytes())
    real = remote.filesystem

    def serve(uri, field):
        if uri.startswith("mem://"):
            return fs, uri.removeprefix("mem://")
        return real(uri, field)

    monkeypatch.setattr(remote, "filesystem", serve)
    yield fs
    memory.store.clear()


def test_a_remote_dataset_is_staged_once_per_node_and_again_when_it_changes(
    memory_bucket, tiny_dataset, tmp_path
):
    local = stage_dataset("mem://bucket/tiny", tmp_path)
    assert local.parent == tmp_path / "remote"
    for split in ("train", "valid", "test"):
        assert filecmp.cmp(local / f"{split}.parquet", tiny_dataset / f"{split}.parquet", False)
    assert open_dataset(local)["valid"].ids == open_dataset(tiny_dataset)["valid"].ids
    copied = (local / "train.parquet").stat().st_mtime_ns
    assert stage_dataset("mem://bucket/tiny", tmp_path) == local
    assert (local / "train.parquet").stat().st_mtime_ns == copied  # not copied again
    # The remote split changes (here: another dataset's test split): the copy follows it.
    with memory_bucket.open_output_stream("bucket/tiny/test.parquet") as out:
        out.write((tiny_dataset / "train.parquet").read_bytes())
    assert stage_dataset("mem://bucket/tiny", tmp_path) == local
    assert filecmp.cmp(local / "test.parquet", tiny_dataset / "train.parquet", False)
    # No temporary or stale copy is left beside it.
    assert [p for p in (tmp_path / "remote").iterdir() if p.is_dir()] == [local]


def test_a_remote_dataset_without_a_split_stages_nothing(memory_bucket, tmp_path):
    memory_bucket.delete_file("bucket/tiny/valid.parquet")
    with pytest.raises(DataError, match=r"^data\.path: mem://bucket/tiny: split file valid"):
        stage_dataset("mem://bucket/tiny", tmp_path)
    assert not (tmp_path / "remote").exists() or not any(
        p.is_dir() for p in (tmp_path / "remote").iterdir()
    )
