"""`robustmsa data synth` through the console entry point."""

from __future__ import annotations

import pytest
from paths import SHARED_DATA
from robustmsa.cli import main
from robustmsa.data.parquet import open_dataset


def test_data_synth_writes_a_readable_dataset(tmp_path, capsys):
    assert (
        main(["data", "synth", "--preset", "tiny", "--seed", "3", "--out", str(tmp_path / "d")])
        == 0
    )
    splits = open_dataset(tmp_path / "d")
    assert [len(s) for s in splits.values()] == [160, 48, 48]
    assert "seed=3" in splits["train"].meta.source
    assert str(tmp_path / "d") in capsys.readouterr().out


def test_data_synth_bad_preset_and_existing_output(tmp_path, capsys):
    assert main(["data", "synth", "--preset", "mosii", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "synthetic preset 'mosii' unknown" in err[0]
    assert not (tmp_path / "x").exists()
    (tmp_path / "y").mkdir()
    assert main(["data", "synth", "--out", str(tmp_path / "y")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_data_import_mfn_and_inspect_on_the_real_ict_mmmo(tmp_path, capsys):
    src = SHARED_DATA / "ict-mmmo"
    if not src.is_dir():
        pytest.skip(f"{src}: shared real data not present")
    out = tmp_path / "ict"
    assert main(["data", "import", "mfn", str(src), "--out", str(out), "--quiet"]) == 0
    summary = capsys.readouterr().out
    assert "train    220 samples; present: text 0/220" in summary
    assert main(["data", "inspect", str(out)]) == 0
    report = capsys.readouterr().out
    assert open_dataset(out)["train"].meta.digest in report
    assert "220" in report and "40" in report and "80" in report


def test_data_import_refuses_a_pickle_without_trust(tmp_path, capsys):
    src = tmp_path / "aligned_50.pkl"
    src.write_bytes(b"not even opened")
    assert main(["data", "import", "mmsa", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trust-pickle" in err[0]
    assert not (tmp_path / "o").exists()
