"""MMSA pickle importer (docs/architecture.md §2, docs/references.md "Data formats").

Each fixture is a small dict with the exact MMSA layout and numpy dtypes (float64 features,
``-inf`` in audio, ``text_bert`` as float64 ``(N, 3, L)``), pickled to ``tmp_path``. Every
expected value is computed here from that dict, independently of the importer.
"""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
from robustmsa.data.batch import MODALITIES
from robustmsa.data.importers.mmsa import import_mmsa
from robustmsa.data.parquet import open_dataset
from robustmsa.data.schema import SPLITS
from robustmsa.errors import DataError

D = {"text": 768, "audio": 5, "vision": 20}
# Text lengths (attention-mask sums, [CLS] and [SEP] included) per split.
TEXT_LEN = {"train": [6, 3, 4, 2], "valid": [5, 6, 2], "test": [3, 4]}
# Unaligned audio/vision lengths; 0 makes the modality absent for that row.
UNALIGNED_LEN = {
    "audio": {"train": [9, 0, 4, 7], "valid": [1, 9, 3], "test": [0, 5]},
    "vision": {"train": [2, 7, 0, 5], "valid": [7, 4, 6], "test": [3, 1]},
}
FRAMES = {"aligned": {"audio": 6, "vision": 6}, "unaligned": {"audio": 9, "vision": 7}}
L = 6


def make_mmsa(kind: str = "aligned", seed: int = 0, bert: bool = True) -> dict:
    """An MMSA-structured dict: ``kind`` is ``aligned``, ``unaligned`` or ``chsims``."""
    rng = np.random.default_rng(seed)
    unaligned = kind != "aligned"
    scale = 1.0 if kind == "chsims" else 3.0
    out = {}
    for split, tlens in TEXT_LEN.items():
        n = len(tlens)
        mask = (np.arange(L)[None, :] < np.array(tlens)[:, None]).astype(np.float64)
        ids = rng.integers(1000, 30000, (n, L)).astype(np.float64)
        ids[:, 0] = 101
        ids[np.arange(n), np.array(tlens) - 1] = 102
        ids *= mask
        data = {
            "id": np.array([f"vid{split}{i}$_${i + 1}" for i in range(n)]),
            "raw_text": np.array([f"{split} sentence number {i}" for i in range(n)]),
            # BERT outputs are non-zero at padding positions too: the mask decides.
            "text": rng.standard_normal((n, L, D["text"])),
            "text_bert": np.stack([ids, mask, np.zeros((n, L))], axis=1),
            "annotations": ["Positive"] * n,
            "classification_labels": np.zeros(n, np.float32),
            "regression_labels": rng.uniform(-scale, scale, n).astype(np.float32),
        }
        for m in ("audio", "vision"):
            t = FRAMES["unaligned" if unaligned else "aligned"][m]
            data[m] = rng.standard_normal((n, t, D[m])) * 2.0 + 1.0
            if unaligned:
                lens = UNALIGNED_LEN[m][split]
                # audio_lengths as a list (as in the MMSA files), vision_lengths as an array.
                data[f"{m}_lengths"] = list(lens) if m == "audio" else np.array(lens)
        # -inf in audio (the known MMSA case), inside kept frames and in padding; one NaN.
        data["audio"][0, 0, 1] = -np.inf
        data["audio"][-1, -1, :] = -np.inf
        data["audio"][n // 2, 0, 3] = np.nan
        if not bert:
            del data["text_bert"]
            for i, t in enumerate(tlens):
                data["text"][i, t:] = 0.0
            data["text"][0, 1] = 0.0  # an interior all-zero frame stays a frame
        if kind == "chsims":
            for k in "TAV":
                data[f"regression_labels_{k}"] = rng.uniform(-1, 1, n).astype(np.float32)
        out[split] = data
    return out


def lengths_of(data: dict, m: str) -> list[int]:
    """Expected lengths, derived from the fixture the way the importer's docstring says."""
    if m == "text" or f"{m}_lengths" not in data:
        if "text_bert" in data:
            return data["text_bert"][:, 1].sum(1).astype(int).tolist()
        nonzero = np.any(data["text"] != 0, axis=2)
        return [int(np.nonzero(r)[0].max()) + 1 if r.any() else 0 for r in nonzero]
    return [int(t) for t in data[f"{m}_lengths"]]


def expected_frames(data: dict, m: str) -> list[np.ndarray]:
    out = []
    for i, t in enumerate(lengths_of(data, m)):
        x = data[m][i, :t].astype(np.float32)
        x[~np.isfinite(x)] = 0.0
        out.append(x)
    return out


def write_pickle(path: pathlib.Path, obj) -> pathlib.Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path


def run(tmp_path, data, name="aligned_50.pkl", **kw):
    src = write_pickle(tmp_path / name, data)
    kw.setdefault("show_progress", False)
    return import_mmsa(src, tmp_path / "out", trust_pickle=True, **kw)


class TouchMarker:
    """Unpickling this creates ``marker``: proof that a pickle runs code when loaded."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_refuses_without_trust_and_never_unpickles(tmp_path):
    marker = tmp_path / "pwned"
    src = write_pickle(tmp_path / "evil.pkl", TouchMarker(marker))
    with pytest.raises(DataError, match=r"evil\.pkl: refusing to unpickle without --trust-pickle"):
        import_mmsa(src, tmp_path / "out", show_progress=False)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    # The refusal comes before any file access: even a missing file is refused, not "not found".
    with pytest.raises(DataError, match="refusing to unpickle"):
        import_mmsa(tmp_path / "absent.pkl", tmp_path / "out", show_progress=False)
    # The payload is live: trusting the file runs it (and the non-dict result is refused).
    with pytest.raises(DataError, match="expected a dict of splits"):
        import_mmsa(src, tmp_path / "out", trust_pickle=True, show_progress=False)
    assert marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["aligned", "unaligned", "chsims"])
def test_round_trip(tmp_path, kind):
    data = make_mmsa(kind)
    summary = run(tmp_path, data, name=f"{kind}_50.pkl")
    out = tmp_path / "out"
    assert summary.out == out
    assert summary.source == f"mmsa:{kind}_50.pkl"
    ds = open_dataset(out)
    meta = ds["train"].meta
    assert summary.digest == meta.digest and len(meta.digest) == 16
    assert meta.name == f"{kind}_50"
    assert meta.source == f"mmsa:{kind}_50.pkl"
    assert meta.dims == D
    assert meta.label_range == ((-1.0, 1.0) if kind == "chsims" else (-3.0, 3.0))
    assert meta.optional_columns == ["text_ids", "raw_text"]
    for split in SPLITS:
        src = data[split]
        n = len(src["id"])
        assert summary.counts[split] == n
        part = ds[split]
        assert part.ids == [str(x) for x in src["id"]]
        np.testing.assert_array_equal(part.labels.numpy(), src["regression_labels"])
        b = part.batch(list(range(n)))
        table = pq.read_table(out / f"{split}.parquet")
        for m in MODALITIES:
            lens = lengths_of(src, m)
            assert b.masks[m].sum(1).tolist() == lens
            assert table.column(f"{m}_length").to_pylist() == lens
            assert b.present[m].tolist() == [t > 0 for t in lens]
            assert summary.present[split][m] == sum(t > 0 for t in lens)
            # Exact raw values (after the float32 cast) from the Parquet column.
            stored = table.column(m).to_pylist()
            for got, want in zip(stored, expected_frames(src, m), strict=True):
                got = np.array(got, np.float32).reshape(-1, D[m])
                np.testing.assert_array_equal(got, want)
            # And through the reader: un-standardise with the train statistics in the meta.
            mean = np.asarray(meta.feature_mean[m], np.float32)
            std = np.asarray(meta.feature_std[m], np.float32)
            for i, want in enumerate(expected_frames(src, m)):
                x = b.features[m][i, : len(want)].numpy() * std + mean
                np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-4)
        ids = src["text_bert"][:, 0]
        want_ids = [ids[i, :t].astype(np.int32).tolist() for i, t in enumerate(TEXT_LEN[split])]
        assert table.column("text_ids").to_pylist() == want_ids
        assert want_ids[0][0] == 101 and want_ids[0][-1] == 102
        assert table.column("raw_text").to_pylist() == [str(x) for x in src["raw_text"]]


def test_aligned_audio_vision_follow_text_length(tmp_path):
    data = make_mmsa("aligned")
    run(tmp_path, data)
    ds = open_dataset(tmp_path / "out")
    for split in SPLITS:
        b = ds[split].batch(list(range(len(ds[split]))))
        for m in MODALITIES:
            assert b.masks[m].sum(1).tolist() == TEXT_LEN[split]


def test_unaligned_lengths_respected_and_zero_length_absent(tmp_path):
    data = make_mmsa("unaligned")
    summary = run(tmp_path, data, name="unaligned_50.pkl")
    ds = open_dataset(tmp_path / "out")
    for split in SPLITS:
        b = ds[split].batch(list(range(len(ds[split]))))
        for m in ("audio", "vision"):
            assert b.masks[m].sum(1).tolist() == UNALIGNED_LEN[m][split]
            assert b.present[m].tolist() == [t > 0 for t in UNALIGNED_LEN[m][split]]
        assert b.present["text"].all()
    assert summary.present["train"]["audio"] == 3
    assert summary.present["test"]["audio"] == 1
    assert summary.present["train"]["vision"] == 3


@pytest.mark.parametrize("kind", ["aligned", "unaligned"])
def test_non_finite_values_counted_and_zeroed(tmp_path, kind):
    data = make_mmsa(kind)
    expected = 0
    for split in SPLITS:
        for m in MODALITIES:
            for i, t in enumerate(lengths_of(data[split], m)):
                expected += int((~np.isfinite(data[split][m][i, :t])).sum())
    # Some -inf sit in dropped padding: those are not counted.
    total = sum(int((~np.isfinite(data[s]["audio"])).sum()) for s in SPLITS)
    assert 0 < expected < total
    summary = run(tmp_path, data)
    assert summary.sanitized == expected
    assert f"non-finite feature values set to 0: {expected}" in summary.format()
    table = pq.read_table(tmp_path / "out" / "train.parquet")
    audio = table.column("audio").to_pylist()
    assert audio[0][0][1] == 0.0  # the -inf at train row 0, frame 0 (kept in both kinds)
    for m in MODALITIES:
        for row in table.column(m).to_pylist():
            assert np.isfinite(np.array(row, np.float64)).all()


def test_chsims_unimodal_labels_validated_not_stored(tmp_path):
    data = make_mmsa("chsims")
    summary = run(tmp_path, data, name="unaligned_39.pkl")
    assert any("regression_labels_A" in note and "not stored" in note for note in summary.notes)
    assert "not stored" in summary.format()
    table = pq.read_table(tmp_path / "out" / "train.parquet")
    assert not any("regression_labels" in c for c in table.column_names)
    # A unimodal label can be chosen as the label.
    (tmp_path / "t").mkdir()
    summary = run(tmp_path / "t", data, label_key="regression_labels_T")
    ds = open_dataset(tmp_path / "t" / "out")
    np.testing.assert_array_equal(ds["valid"].labels.numpy(), data["valid"]["regression_labels_T"])
    assert [n for n in summary.notes if "regression_labels_T" in n] == []


def test_bad_unimodal_label_refused(tmp_path):
    data = make_mmsa("chsims")
    data["valid"]["regression_labels_V"][1] = np.nan
    with pytest.raises(DataError, match=r"split 'valid', row 1 .*'regression_labels_V'"):
        run(tmp_path, data)
    assert not (tmp_path / "out").exists()


def test_label_range_inferred_or_passed(tmp_path):
    data = make_mmsa("aligned")
    data["train"]["regression_labels"][:] = 0.5  # all |y| <= 1 ...
    data["valid"]["regression_labels"][:] = -0.5
    data["test"]["regression_labels"][:] = 1.0
    run(tmp_path, data)
    assert open_dataset(tmp_path / "out")["test"].meta.label_range == (-1.0, 1.0)
    (tmp_path / "b").mkdir()
    run(tmp_path / "b", data, label_range=(-3.0, 3.0))
    assert open_dataset(tmp_path / "b" / "out")["test"].meta.label_range == (-3.0, 3.0)


def test_without_text_bert_lengths_from_zero_padding(tmp_path):
    data = make_mmsa("unaligned", bert=False)
    summary = run(tmp_path, data)
    ds = open_dataset(tmp_path / "out")
    assert ds["train"].meta.optional_columns == ["raw_text"]
    b = ds["train"].batch(list(range(4)))
    assert b.masks["text"].sum(1).tolist() == TEXT_LEN["train"]  # interior zero frame kept
    assert summary.counts == {"train": 4, "valid": 3, "test": 2}


def test_progress_bar_runs(tmp_path):
    summary = run(tmp_path, make_mmsa("aligned"), show_progress=True)
    assert summary.counts["train"] == 4


def _del(split, key):
    def f(d):
        del d[split][key]

    return f


def _set(split, key, fn):
    def f(d):
        d[split][key] = fn(d[split][key])

    return f


def _item(split, key, index, value):
    def f(d):
        d[split][key][index] = value

    return f


ERROR_CASES = {
    "missing split": (
        "aligned",
        lambda d: d.pop("valid"),
        r"split 'valid': missing",
    ),
    "missing key": ("aligned", _del("test", "audio"), r"split 'test', field 'audio': missing key"),
    "missing label": (
        "aligned",
        _del("train", "regression_labels"),
        r"split 'train', field 'regression_labels': missing key",
    ),
    "length > T": (
        "unaligned",
        _item("train", "audio_lengths", 2, 10),
        r"split 'train', row 2 \(id 'vidtrain2\$_\$3'\), field 'audio_lengths': length 10 outside",
    ),
    "negative length": (
        "unaligned",
        _item("test", "vision_lengths", 1, -1),
        r"split 'test', row 1 .*field 'vision_lengths': length -1 outside",
    ),
    "fractional length": (
        "unaligned",
        _set("valid", "vision_lengths", lambda a: a + 0.5),
        r"split 'valid', row 0 .*field 'vision_lengths': .*not an integer",
    ),
    "duplicate ids": (
        "aligned",
        _item("valid", "id", 2, "vidvalid0$_$1"),
        r"split 'valid', row 2, field 'id': duplicate id 'vidvalid0\$_\$1' \(also at row 0\)",
    ),
    "N mismatch features": (
        "aligned",
        _set("train", "vision", lambda a: a[:-1]),
        r"split 'train', field 'vision': has 3 rows but 'id' has 4",
    ),
    "N mismatch labels": (
        "aligned",
        _set("test", "regression_labels", lambda a: a[:1]),
        r"split 'test', field 'regression_labels': has 1 rows but 'id' has 2",
    ),
    "N mismatch raw_text": (
        "aligned",
        _set("valid", "raw_text", lambda a: a[:2]),
        r"split 'valid', field 'raw_text': has 2 rows but 'id' has 3",
    ),
    "N mismatch lengths": (
        "unaligned",
        _set("train", "audio_lengths", lambda a: a[:3]),
        r"split 'train', field 'audio_lengths': has 3 rows but 'id' has 4",
    ),
    "aligned T differs without lengths": (
        "unaligned",
        _del("valid", "audio_lengths"),
        r"split 'valid', field 'audio': has 9 frames .* no 'audio_lengths'",
    ),
    "mask not a prefix": (
        "aligned",
        _item("train", "text_bert", (1, 1, 0), 0.0),
        r"split 'train', row 1 .*field 'text_bert': .*not a prefix",
    ),
    "text_bert in some splits only": (
        "aligned",
        _del("test", "text_bert"),
        r"split 'test', field 'text_bert': missing",
    ),
    "label out of range": (
        "aligned",
        _item("valid", "regression_labels", 1, 3.5),
        r"split 'valid', row 1 .*field 'regression_labels': label 3.5 outside",
    ),
    "non-finite label": (
        "aligned",
        _item("train", "regression_labels", 3, np.inf),
        r"split 'train', row 3 .*field 'regression_labels': label inf is not finite",
    ),
    "feature dim differs": (
        "aligned",
        _set("test", "audio", lambda a: a[:, :, :4]),
        r"split 'test', field 'audio': feature dim 4 differs",
    ),
    "features not 3-d": (
        "aligned",
        _set("train", "text", lambda a: a[:, 0]),
        r"split 'train', field 'text': expected 3 dimensions",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_files_raise_and_leave_no_output(tmp_path, case):
    kind, mutate, pattern = ERROR_CASES[case]
    data = make_mmsa(kind)
    mutate(data)
    with pytest.raises(DataError, match=pattern) as info:
        run(tmp_path, data)
    assert str(tmp_path / "aligned_50.pkl") in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aligned_50.pkl"]


def test_split_not_a_dict_and_unreadable_pickle(tmp_path):
    data = make_mmsa("aligned")
    data["test"] = [1, 2, 3]
    with pytest.raises(DataError, match=r"split 'test': expected a dict, got list"):
        run(tmp_path, data)
    bad = tmp_path / "garbage.pkl"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match=r"garbage\.pkl: not a readable pickle"):
        import_mmsa(bad, tmp_path / "out", trust_pickle=True, show_progress=False)
    assert not (tmp_path / "out").exists()


def test_existing_output_refused_before_loading(tmp_path):
    marker = tmp_path / "loaded"
    src = write_pickle(tmp_path / "x.pkl", TouchMarker(marker))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists"):
        import_mmsa(src, out, trust_pickle=True, show_progress=False)
    assert not marker.exists()
    assert (out / "keep.txt").read_text() == "mine"
