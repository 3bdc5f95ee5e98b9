"""MFN-style HDF5 importer (docs/architecture.md §2, docs/references.md "Data formats",
shared/data/README.md).

Fixtures are tiny folders written here with h5py in the exact MFN layout (float64 datasets
``d1``, front zero padding, ``text_{split}_emb.h5``, ``video_{split}.h5``, ``y_{split}.h5``).
Every expected value is computed here from the arrays written, independently of the importer.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import paths
import pyarrow.parquet as pq
import pytest
import torch
from robustmsa.data.batch import MODALITIES
from robustmsa.data.importers.mfn import import_mfn
from robustmsa.data.parquet import open_dataset
from robustmsa.data.schema import SPLITS
from robustmsa.errors import DataError

D = {"text": 4, "audio": 3, "vision": 2}
N = {"train": 4, "valid": 3, "test": 2}
T = 5
# Leading all-zero frames per split, modality and sample (T = all frames zero: the sample has
# no data for that modality). MFN's padding is the leading steps where EVERY modality of the
# split is zero (`joint_padding`); a modality's further leading zeros (e.g. words with no face
# detected) are data and keep the modalities aligned step by step.
PAD = {
    "train": {"audio": [0, 2, 4, T], "vision": [1, 0, 3, 2]},
    "valid": {"text": [2, 0, T], "audio": [1, 1, 0], "vision": [0, 4, 2]},
    "test": {"text": [3, 1], "audio": [0, 2], "vision": [2, 2]},
}
FILE = {"text": "text_{}_emb.h5", "audio": "audio_{}.h5", "vision": "video_{}.h5"}


def write_h5(path: Path, array: np.ndarray, dataset: str = "d1") -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=array)
    return path


def make_features(rng, split: str, m: str) -> np.ndarray:
    x = rng.standard_normal((N[split], T, D[m])) * 3.0 + 0.5
    for i, pad in enumerate(PAD[split][m]):
        x[i, :pad] = 0.0
    return x


def make_mfn(root: Path, seed: int = 0, labels: str = "scalar") -> dict:
    """Write the fixture folder; returns ``{split: {modality or 'y': array}}`` as written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        data[split] = {m: make_features(rng, split, m) for m in PAD[split]}
    # Interior and trailing all-zero frames are data, not padding.
    data["train"]["vision"][1, 2] = 0.0
    data["valid"]["text"][1, T - 1] = 0.0
    # Non-finite values inside kept frames; a frame that is NaN only is data too.
    data["train"]["audio"][0, 1, 2] = np.nan
    data["train"]["audio"][1, 3, 0] = -np.inf
    data["valid"]["text"][0, 2, 1] = np.inf
    data["test"]["vision"][0, 2] = np.nan  # the first kept frame: all NaN
    data["test"]["audio"][1, 4, 1] = 1e300  # beyond float32: inf on the cast, then 0
    for split in SPLITS:
        n = N[split]
        if labels == "scalar":
            y = rng.choice(np.arange(1.0, 5.5, 0.5), n)
            y = y if split != "valid" else y[:, None]  # (N,) and (N, 1) both accepted
        elif labels == "onehot":
            y = np.eye(3)[rng.integers(0, 3, n)]
        else:  # multi-column
            y = rng.uniform(-3, 3, (n, 4))
        data[split]["y"] = y
    for split in SPLITS:
        for m, x in data[split].items():
            if m == "y":
                write_h5(root / f"y_{split}.h5", x)
            elif split == "valid" and m == "vision":
                write_h5(root / f"vision_{split}.h5", x)  # the alternative name
            elif split == "test" and m == "audio":
                write_h5(root / FILE[m].format(split), x, "data")  # the alternative dataset
            else:
                write_h5(root / FILE[m].format(split), x)
    return data


def joint_padding(split: str) -> list[int]:
    return [min(PAD[split][m][i] for m in PAD[split]) for i in range(N[split])]


def expected_frames(x: np.ndarray, padding: list[int]) -> list[np.ndarray]:
    """Frames from the sample's joint padding on (none for an all-zero sample), float32,
    non-finite values set to 0."""
    out = []
    for sample, first in zip(x, padding, strict=True):
        if not np.any(sample != 0):
            first = len(sample)
        with np.errstate(over="ignore"):
            kept = sample[first:].astype(np.float32)
        kept[~np.isfinite(kept)] = 0.0
        out.append(kept)
    return out


def run(src: Path, out: Path, **kw):
    kw.setdefault("show_progress", False)
    return import_mfn(src, out, **kw)


def stored_frames(table, m: str) -> list[np.ndarray]:
    return [np.array(v, np.float32).reshape(-1, D[m]) for v in table.column(m).to_pylist()]


def test_round_trip(tmp_path):
    data = make_mfn(tmp_path / "mini")
    (tmp_path / "mini" / "notes.h5").touch()  # not part of the layout: ignored, noted
    out = tmp_path / "out"
    summary = run(tmp_path / "mini", out)
    ds = open_dataset(out)
    meta = ds["train"].meta
    assert summary.out == out and summary.source == "mfn:mini" == meta.source
    assert summary.digest == meta.digest and meta.name == "mini"
    assert meta.dims == D
    assert meta.label_range == (1.0, 5.0)
    non_finite = 0
    for split in SPLITS:
        src = data[split]
        part = ds[split]
        assert part.ids == [f"{split}-{i:05d}" for i in range(N[split])]
        assert summary.counts[split] == N[split]
        np.testing.assert_array_equal(part.labels.numpy(), src["y"].reshape(-1).astype(np.float32))
        table = pq.read_table(out / f"{split}.parquet")
        b = part.batch(list(range(N[split])))
        for m in MODALITIES:
            if m not in src:  # no file in this split: absent for every sample, no frames
                assert table.column(f"{m}_length").to_pylist() == [0] * N[split]
                assert b.present[m].tolist() == [False] * N[split]
                assert summary.present[split][m] == 0
                continue
            with np.errstate(over="ignore"):
                non_finite += int((~np.isfinite(src[m].astype(np.float32))).sum())
            want = expected_frames(src[m], joint_padding(split))
            pads = zip(PAD[split][m], joint_padding(split), strict=True)
            lens = [0 if p == T else T - j for p, j in pads]
            assert [len(w) for w in want] == lens  # the fixture's own padding, as designed
            assert table.column(f"{m}_length").to_pylist() == lens
            assert b.masks[m].sum(1).tolist() == lens
            assert b.present[m].tolist() == [t > 0 for t in lens]
            assert summary.present[split][m] == sum(t > 0 for t in lens)
            assert summary.all_zero[split][m] == sum(t == 0 for t in lens)
            for got, w in zip(stored_frames(table, m), want, strict=True):
                np.testing.assert_array_equal(got, w)
            mean = np.asarray(meta.feature_mean[m], np.float32)
            std = np.asarray(meta.feature_std[m], np.float32)
            for i, w in enumerate(want):
                x = b.features[m][i, : len(w)].numpy() * std + mean
                np.testing.assert_allclose(x, w, rtol=1e-5, atol=1e-4)
    assert summary.sanitized == non_finite == 6  # 3 single values, a 2-value NaN frame, 1e300
    # The all-zero audio sample of train and text sample of valid were made absent.
    assert summary.all_zero["train"]["audio"] == 1 and summary.all_zero["valid"]["text"] == 1
    text = "\n".join(summary.notes)
    assert "split 'train': no text file" in text and "ignored files: notes.h5" in text
    assert "1 samples with only all-zero audio frames" in text
    # Interior zero frame kept as data; the NaN-only first kept frame is a zero frame now.
    train_vision = stored_frames(pq.read_table(out / "train.parquet"), "vision")
    assert not train_vision[1][2].any()
    # Test sample 0: audio has data from step 0, so vision's two leading zero frames and its
    # NaN-only third frame are data (zero frames), aligned with the audio steps.
    test_vision = stored_frames(pq.read_table(out / "test.parquet"), "vision")
    assert len(test_vision[0]) == T and not test_vision[0][:3].any()
    # Train sample 0: vision's one leading zero frame is kept, aligned with audio's first step.
    assert len(train_vision[0]) == T and not train_vision[0][0].any()
    assert "samples; present" in summary.format()


def test_progress_bar_runs(tmp_path, capsys):
    make_mfn(tmp_path / "mini")
    run(tmp_path / "mini", tmp_path / "out", show_progress=True)
    assert "mfn mini" in capsys.readouterr().err


def test_one_hot_labels_with_label_values(tmp_path):
    data = make_mfn(tmp_path / "mini", labels="onehot")
    values = [-1.0, 0.0, 1.0]
    run(tmp_path / "mini", tmp_path / "out", label_values=values, name="oh")
    ds = open_dataset(tmp_path / "out")
    assert ds["train"].meta.name == "oh"
    assert ds["train"].meta.label_range == (-1.0, 1.0)
    for split in SPLITS:
        want = np.asarray(values, np.float32)[data[split]["y"].argmax(1)]
        np.testing.assert_array_equal(ds[split].labels.numpy(), want)


def test_multi_column_labels_with_label_column(tmp_path):
    data = make_mfn(tmp_path / "mini", labels="multi")
    run(tmp_path / "mini", tmp_path / "out", label_column=2, label_range=(-3.0, 3.0))
    ds = open_dataset(tmp_path / "out")
    assert ds["train"].meta.label_range == (-3.0, 3.0)
    for split in SPLITS:
        want = data[split]["y"][:, 2].astype(np.float32)
        np.testing.assert_array_equal(ds[split].labels.numpy(), want)


def _count_mismatch(root: Path) -> tuple[str, ...]:
    x = h5py.File(root / "audio_valid.h5", "r")["d1"][()]
    (root / "audio_valid.h5").unlink()
    write_h5(root / "audio_valid.h5", x[:2])
    return ("split 'valid'", "sample counts disagree", "y_valid.h5 has 3", "audio_valid.h5 has 2")


def _dims_mismatch(root: Path) -> tuple[str, ...]:
    (root / "video_test.h5").unlink()
    write_h5(root / "video_test.h5", np.ones((N["test"], T, 5)))
    return ("video_test.h5", "feature dim 5", "'vision'", "video_train.h5")


def _missing_labels(root: Path) -> tuple[str, ...]:
    (root / "y_test.h5").unlink()
    return ("y_test.h5", "labels file of split 'test' not found")


def _labels_2d_without_option(root: Path) -> tuple[str, ...]:
    for split in SPLITS:
        (root / f"y_{split}.h5").unlink()
        write_h5(root / f"y_{split}.h5", np.ones((N[split], 2)))
    return ("y_train.h5", "2 columns", "--label-column K", "--label-values")


def _bad_one_hot_row(root: Path) -> tuple[str, ...]:
    y = np.eye(3)[[0, 1, 2]]
    y[1] = [0.0, 1.0, 1.0]
    (root / "y_valid.h5").unlink()
    write_h5(root / "y_valid.h5", y)
    return ("y_valid.h5", "row 1", "not a one-hot row")


def _unknown_dataset_name(root: Path) -> tuple[str, ...]:
    x = h5py.File(root / "video_train.h5", "r")["d1"][()]
    (root / "video_train.h5").unlink()
    write_h5(root / "video_train.h5", x, "features")
    return ("video_train.h5", "expected one dataset named 'd1' or 'data'", "['features']")


def _no_modality_anywhere(root: Path) -> tuple[str, ...]:
    for split in SPLITS:
        (root / f"audio_{split}.h5").unlink(missing_ok=True)
    return ("modality 'audio': no file in any split",)


def _non_finite_label(root: Path) -> tuple[str, ...]:
    (root / "y_train.h5").unlink()
    write_h5(root / "y_train.h5", np.array([1.0, 2.0, np.nan, 3.0]))
    return ("y_train.h5", "row 2", "not finite")


def _label_out_of_range(root: Path) -> tuple[str, ...]:
    (root / "y_train.h5").unlink()
    write_h5(root / "y_train.h5", np.array([1.0, 2.0, 7.0, 3.0]))
    return ("y_train.h5", "row 2 (id 'train-00002')", "outside the label range [1.0, 5.0]")


def _step_mismatch(root: Path) -> tuple[str, ...]:
    x = h5py.File(root / "audio_train.h5", "r")["d1"][()]
    (root / "audio_train.h5").unlink()
    write_h5(root / "audio_train.h5", x[:, 1:])  # one step fewer than the other modalities
    return ("split 'train': step counts disagree", f"audio_train.h5 has {T - 1}")


def _both_video_and_vision(root: Path) -> tuple[str, ...]:
    write_h5(root / "vision_train.h5", np.ones((N["train"], T, D["vision"])))
    return ("both video_train.h5 and vision_train.h5 exist",)


@pytest.mark.parametrize(
    "break_it, kw",
    [
        (_count_mismatch, {}),
        (_dims_mismatch, {}),
        (_missing_labels, {}),
        (_labels_2d_without_option, {}),
        (_bad_one_hot_row, {"label_values": [1.0, 2.0, 3.0]}),
        (_unknown_dataset_name, {}),
        (_no_modality_anywhere, {}),
        (_non_finite_label, {}),
        (_label_out_of_range, {"label_range": (1.0, 5.0)}),
        (_both_video_and_vision, {}),
        (_step_mismatch, {}),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_bad_folders_raise_and_leave_no_output(tmp_path, break_it, kw):
    root = tmp_path / "mini"
    labels = "onehot" if "label_values" in kw else "scalar"
    make_mfn(root, labels=labels)
    expected = break_it(root)
    with pytest.raises(DataError) as info:
        run(root, tmp_path / "out", **kw)
    for part in expected:
        assert part in str(info.value)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_label_option_mismatches(tmp_path):
    make_mfn(tmp_path / "mini", labels="onehot")
    with pytest.raises(DataError, match=r"y_train\.h5.*2 label values given.*3 columns"):
        run(tmp_path / "mini", tmp_path / "out", label_values=[0.0, 1.0])
    with pytest.raises(DataError, match=r"y_train\.h5.*label column 3 out of range"):
        run(tmp_path / "mini", tmp_path / "out", label_column=3)
    with pytest.raises(DataError, match="not both"):
        run(tmp_path / "mini", tmp_path / "out", label_column=0, label_values=[0.0, 1.0, 2.0])
    with pytest.raises(DataError, match="MFN folder not found"):
        run(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="already exists"):
        run(tmp_path / "mini", tmp_path / "out", label_column=0)


def test_real_ict_mmmo(tmp_path):
    src = paths.SHARED_DATA / "ict-mmmo"
    if not src.is_dir():
        pytest.skip(f"{src}: shared real data not present")
    summary = run(src, tmp_path / "out")
    ds = open_dataset(tmp_path / "out")
    meta = ds["train"].meta
    assert meta.dims == {"text": 300, "audio": 74, "vision": 36}
    assert meta.label_range == (1.0, 5.0)
    assert {s: len(ds[s]) for s in SPLITS} == {"train": 220, "valid": 40, "test": 80}
    assert summary.counts == {"train": 220, "valid": 40, "test": 80}
    for split in SPLITS:
        y = ds[split].labels.numpy()
        assert y.min() >= 1.0 and y.max() <= 5.0
        b = ds[split].batch(list(range(len(ds[split]))))
        if split == "train":
            assert not b.present["text"].any() and not b.masks["text"].any()
        else:
            with h5py.File(src / f"text_{split}_emb.h5", "r") as f:
                has_text = np.any(f["d1"][()] != 0, axis=(1, 2))
            assert b.present["text"].tolist() == has_text.tolist()
            assert has_text.all()
        for m in ("audio", "vision"):
            assert b.present[m].all()
        # Word-aligned: every present modality of a sample keeps the same number of steps,
        # although video has all-zero words (no face found) where audio and text have data.
        lengths = {m: b.masks[m].sum(1) for m in MODALITIES if b.present[m].any()}
        reference = lengths["audio"]
        assert all(torch.equal(v, reference) for v in lengths.values()), split


def test_a_modality_non_finite_throughout_is_absent_not_present_zeros(tmp_path):
    root = tmp_path / "mini"
    make_mfn(root)
    x = h5py.File(root / "audio_train.h5", "r")["d1"][()]
    x[2] = np.nan  # sample 2 of train: its audio says nothing
    (root / "audio_train.h5").unlink()
    write_h5(root / "audio_train.h5", x)
    summary = run(root, tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / "train.parquet")
    assert table.column("audio_present").to_pylist()[2] is False
    assert table.column("audio_length").to_pylist()[2] == 0
    assert summary.all_zero["train"]["audio"] >= 1
