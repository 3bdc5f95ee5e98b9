"""CMU-MultimodalSDK ``.csd`` importer (docs/architecture.md §2, docs/references.md "Data formats").

Fixtures are tiny computational sequences written here with h5py in the SDK layout (a root
group named after the sequence, ``data/<video>/features`` and ``intervals``, JSON strings
under ``metadata``). The aligned values of the hand example are worked out in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from robustmsa.data.importers.csd import EPSILON, align, import_csd
from robustmsa.data.parquet import open_dataset
from robustmsa.data.schema import SPLITS
from robustmsa.errors import DataError

D = {"text": 2, "audio": 3, "vision": 1}


def write_csd(path: Path, sequence: str, videos: dict[str, tuple]) -> Path:
    """``videos``: id -> (features, intervals); written as the SDK writes a sequence."""
    with h5py.File(path, "w") as f:
        root = f.create_group(sequence)
        data = root.create_group("data")
        for vid, (x, iv) in videos.items():
            g = data.create_group(vid)
            g.create_dataset("features", data=np.asarray(x, np.float64))
            g.create_dataset("intervals", data=np.asarray(iv, np.float64))
        meta = root.create_group("metadata")
        for key, value in {"root name": sequence, "dimension names": None}.items():
            meta.create_dataset(key, data=json.dumps(value))
    return path


def hand_example() -> dict[str, dict[str, tuple]]:
    """Three videos. v1 is the hand-checked one:

    text words [0,1], [1,2], [2,3]. Audio at 4 Hz over [0, 2] only, frame j = [j, 10 j, 1]
    with a NaN (set to 0) at frame 2, column 2: word 0 averages frames 0..3 (frame 3 ends at
    1.0 and frame 4 starts there: touching is no overlap) -> [1.5, 15, 0.75]; word 1 frames
    4..7 -> [5.5, 55, 1]; word 2 has no audio frame: dropped. Vision (irregular, nested
    windows) A = [0,3] -> 3, B = [0.2,0.4] -> 6, C = [1.2,1.4] -> 9: word 0 = mean(A, B) = 4.5,
    word 1 = mean(A, C) = 6, word 2 = A = 3.
    """
    audio_v1 = np.array([[j, 10.0 * j, 1.0] for j in range(8)])
    audio_v1[2, 2] = np.nan
    quarter = np.array([[0.25 * j, 0.25 * (j + 1)] for j in range(8)])
    return {
        "text": {
            "v1": ([[1.0, 2.0], [3.0, np.inf], [5.0, 6.0]], [[0, 1], [1, 2], [2, 3]]),
            "v2": ([[0.5, 0.5], [0.25, -1.0]], [[0, 0.5], [0.5, 1.5]]),
            "v3": ([[7.0, 8.0]], [[10.0, 11.0]]),
        },
        "audio": {
            "v1": (audio_v1, quarter),
            # v2 is missing from the audio file
            "v3": (
                [[1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [100.0, 0, 0]],
                [[10, 10.5], [10.5, 11], [11, 12]],
            ),
        },
        "vision": {
            "v1": ([[3.0], [6.0], [9.0]], [[0, 3], [0.2, 0.4], [1.2, 1.4]]),
            "v2": ([[2.0], [4.0]], [[0, 0.5], [1.0, 1.5]]),
            "v3": ([[1.0]], [[20.0, 21.0]]),  # overlaps no word: vision absent for v3
        },
        "labels": {
            "v1": ([[1.0, 9.0], [2.0, 9.0]], [[0, 1.5], [1.5, 3]]),  # first column: 1.5
            "v2": ([[-1.0, 0.0]], [[0, 1.5]]),
            "v3": ([[0.5, 0.0], [0.0, 0.0], [-0.5, 0.0]], [[10, 10.3], [10.3, 10.6], [10.6, 11]]),
        },
    }


FOLDS = {"train": ["v1"], "valid": ["v2"], "test": ["v3"]}


def make_csd(root: Path, videos: dict | None = None, folds: dict | None = None) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    videos = videos or hand_example()
    names = {"text": "glove_vectors", "audio": "COVAREP", "vision": "FACET_4.2"}
    paths = {m: write_csd(root / f"{names[m]}.csd", names[m], videos[m]) for m in names}
    paths["labels"] = write_csd(root / "labels.csd", "Opinion Segment Labels", videos["labels"])
    paths["folds"] = root / "folds.json"
    paths["folds"].write_text(json.dumps(folds or FOLDS))
    return paths


def run(paths: dict, out: Path, **kw):
    kw.setdefault("show_progress", False)
    sources = {m: paths[m] for m in ("text", "audio", "vision")}
    return import_csd(sources, paths["labels"], paths["folds"], out, **kw)


def frames(table, m: str) -> list[np.ndarray]:
    return [np.array(v, np.float32).reshape(-1, D[m]) for v in table.column(m).to_pylist()]


def test_hand_example(tmp_path):
    paths = make_csd(tmp_path / "mosi")
    out = tmp_path / "out"
    summary = run(paths, out)
    ds = open_dataset(out)
    meta = ds["train"].meta
    assert meta.dims == D and meta.name == "mosi" and summary.digest == meta.digest
    assert meta.source == summary.source
    assert meta.source == (
        "csd:text=glove_vectors.csd,audio=COVAREP.csd,vision=FACET_4.2.csd,labels=labels.csd"
    )
    assert meta.label_range == (-1.0, 2.0)
    assert {s: ds[s].ids for s in SPLITS} == FOLDS
    assert [float(ds[s].labels[0]) for s in SPLITS] == [1.5, -1.0, 0.0]
    t = {s: pq.read_table(out / f"{s}.parquet") for s in SPLITS}
    # v1: text as is (inf -> 0), audio and vision averaged per word (docstring of hand_example).
    np.testing.assert_array_equal(frames(t["train"], "text")[0], [[1, 2], [3, 0], [5, 6]])
    np.testing.assert_array_equal(frames(t["train"], "audio")[0], [[1.5, 15, 0.75], [5.5, 55, 1]])
    np.testing.assert_array_equal(frames(t["train"], "vision")[0], [[4.5], [6], [3]])
    # v2: not in the audio file -> audio absent; vision: word [0, .5] -> 2, word [.5, 1.5] -> 4.
    assert t["valid"].column("audio_present").to_pylist() == [False]
    assert t["valid"].column("audio_length").to_pylist() == [0]
    np.testing.assert_array_equal(frames(t["valid"], "vision")[0], [[2], [4]])
    # v3: one word [10, 11]; audio frames [10,10.5], [10.5,11] averaged; [11,12] only touches.
    np.testing.assert_array_equal(frames(t["test"], "audio")[0], [[2, 2, 2]])
    assert t["test"].column("vision_present").to_pylist() == [False]
    assert summary.sanitized == 2
    assert summary.missing == {"text": 0, "audio": 1, "vision": 0}
    assert summary.dropped_steps == {"text": 0, "audio": 1, "vision": 1}
    assert summary.present == {
        "train": {"text": 1, "audio": 1, "vision": 1},
        "valid": {"text": 1, "audio": 0, "vision": 1},
        "test": {"text": 1, "audio": 1, "vision": 0},
    }
    notes = "\n".join(summary.notes)
    assert "audio: 1 videos not in COVAREP.csd" in notes
    assert "vision: 1 text steps without an overlapping frame dropped; 1 videos" in notes
    b = ds["train"].batch([0])
    assert b.masks["audio"].sum().item() == 2 and b.masks["text"].sum().item() == 3


def test_reference_modality_and_options(tmp_path, capsys):
    paths = make_csd(tmp_path / "mosi")
    summary = run(
        paths, tmp_path / "out", reference="vision", name="byvision", label_range=(-3, 3),
        show_progress=True,
    )  # fmt: skip
    assert "csd mosi" in capsys.readouterr().err
    ds = open_dataset(tmp_path / "out")
    assert ds["train"].meta.name == "byvision" and ds["train"].meta.label_range == (-3.0, 3.0)
    t = pq.read_table(tmp_path / "out" / "train.parquet")
    # v1 steps are the vision windows A, B, C: A overlaps all three words (inf -> 0), B the
    # first, C the second.
    np.testing.assert_array_equal(frames(t, "vision")[0], [[3], [6], [9]])
    want = np.array([[3, 8 / 3], [1, 2], [3, 0]], np.float32)
    np.testing.assert_array_equal(frames(t, "text")[0], want)
    assert summary.present["test"]["vision"] == 1


def brute_force(ref, iv, x):
    """The rule of the module docstring, written out per step and frame."""
    means, mask = [], []
    for s, e in ref:
        hit = [j for j, (a, b) in enumerate(iv) if min(e, b) - max(s, a) > EPSILON]
        mask.append(bool(hit))
        if hit:
            means.append(x[hit].mean(0))
    return np.array(means).reshape(-1, x.shape[1]), np.array(mask, bool)


@pytest.mark.parametrize("regular", [True, False])
def test_align_matches_brute_force(regular):
    rng = np.random.default_rng(3)
    words = np.sort(rng.uniform(0, 20, 40)).reshape(-1, 2)  # 20 disjoint words, with gaps
    words[3, 1] = words[3, 0]  # a zero-length word overlaps nothing
    if regular:  # fixed-rate frames (sorted path), shuffled, with a gap
        starts = np.arange(0, 20, 0.1)
        starts = starts[(starts < 7) | (starts > 9)]
        iv = np.stack([starts, starts + 0.1], 1)[rng.permutation(len(starts))]
    else:  # windows of random lengths: ends not sorted (general path)
        a = rng.uniform(0, 20, 150)
        iv = np.stack([a, a + rng.uniform(0, 3, 150)], 1)
        iv[5, 1] = iv[5, 0]  # a zero-length frame overlaps nothing
    x = rng.standard_normal((len(iv), 4))
    got, mask = align(words, iv, x)
    want, want_mask = brute_force(words, iv, x)
    np.testing.assert_array_equal(mask, want_mask)
    assert not mask[3] and mask.sum() > 5
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _unknown_video(paths):
    paths["folds"].write_text(json.dumps({"train": ["v1", "v9"], "valid": ["v2"], "test": ["v3"]}))
    return ("folds.json", "'v9'", "not found in the labels file", "labels.csd")


def _overlapping_folds(paths):
    paths["folds"].write_text(json.dumps({"train": ["v1", "v2"], "valid": ["v2"], "test": ["v3"]}))
    return ("folds.json", "'v2'", "also in split 'train'", "folds overlap")


def _missing_features(paths):
    with h5py.File(paths["audio"], "a") as f:
        del f["COVAREP/data/v3/features"]
    return ("COVAREP.csd", "video 'v3'", "no 'features' dataset", "['intervals']")


def _missing_from_reference(paths):
    with h5py.File(paths["text"], "a") as f:
        del f["glove_vectors/data/v2"]
    return ("glove_vectors.csd", "video 'v2'", "reference modality 'text'")


def _dim_mismatch(paths):
    with h5py.File(paths["vision"], "a") as f:
        del f["FACET_4.2/data/v2/features"]
        f["FACET_4.2/data/v2/features"] = np.ones((2, 3))
    return ("FACET_4.2.csd", "video 'v2'", "3 features per frame, expected 1")


def _interval_rows(paths):
    with h5py.File(paths["audio"], "a") as f:
        del f["COVAREP/data/v1/intervals"]
        f["COVAREP/data/v1/intervals"] = np.zeros((3, 2))
    return ("COVAREP.csd", "video 'v1'", "'intervals'", "3 intervals but 8 feature rows")


def _not_a_sequence(paths):
    with h5py.File(paths["vision"], "w") as f:
        f["features"] = np.ones(3)
    return ("FACET_4.2.csd", "expected one root group")


def _bad_label(paths):
    with h5py.File(paths["labels"], "a") as f:
        f["Opinion Segment Labels/data/v1/features"][1, 0] = np.nan
    return ("labels.csd", "video 'v1'", "row 1", "not finite")


def _bad_folds_keys(paths):
    paths["folds"].write_text(json.dumps({"train": ["v1"], "dev": ["v2"], "test": ["v3"]}))
    return ("folds.json", "missing ['valid']", "unknown ['dev']")


@pytest.mark.parametrize(
    "break_it",
    [
        _unknown_video,
        _overlapping_folds,
        _missing_features,
        _missing_from_reference,
        _dim_mismatch,
        _interval_rows,
        _not_a_sequence,
        _bad_label,
        _bad_folds_keys,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_bad_inputs_raise_and_leave_no_output(tmp_path, break_it):
    paths = make_csd(tmp_path / "mosi")
    expected = break_it(paths)
    with pytest.raises(DataError) as info:
        run(paths, tmp_path / "out")
    for part in expected:
        assert part in str(info.value)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))


def test_bad_arguments(tmp_path):
    paths = make_csd(tmp_path / "mosi")
    sources = {m: paths[m] for m in ("text", "audio")}
    with pytest.raises(DataError, match=r"modality 'vision' has no \.csd file"):
        import_csd(sources, paths["labels"], paths["folds"], tmp_path / "out")
    with pytest.raises(DataError, match="unknown modality 'words'"):
        run(paths, tmp_path / "out", reference="words")
    with pytest.raises(DataError, match=r"label range \(1.0, 1.0\) is empty"):
        run(paths, tmp_path / "out", label_range=(1.0, 1.0))
    with pytest.raises(DataError, match=r"labels\.csd: video 'v1' \(split 'train'\).*outside"):
        run(paths, tmp_path / "out", label_range=(-1.0, 1.0))
    assert not (tmp_path / "out").exists()
