"""`robustmsa data synth` through the console entry point."""

from __future__ import annotations

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
