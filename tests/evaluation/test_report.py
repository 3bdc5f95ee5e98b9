"""`robustmsa report`: a logged run's figures, drawn later from what the run logged.

Runs of a real sqlite MLflow store, logged the way a study logs them: a parent holding the
oracle per split, a completed trial (validation table, test report), a pruned trial (only its
checkpoint's rows), and a run with nothing to draw.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from robustmsa.cli import main as cli_main
from robustmsa.evaluation.report import report_run
from robustmsa.tracking.spectrum import ORACLE_SOURCE, log_spectrum
from robustmsa.training.checkpoint import ROWS_FILE

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

PNG = b"\x89PNG\r\n\x1a\n"
LEVELS = [0.0, 0.5, 1.0]


def _rows(offset: float, protocols=("missing", "noise")) -> list[dict]:
    rows = []
    for metric in ("mae", "corr"):
        rows.append(
            dict(protocol="clean", modalities="all", level=0.0, metric=metric, value=offset, n=10)
        )
        for k, protocol in enumerate(protocols):
            rows += [
                dict(
                    protocol=protocol,
                    modalities="all",
                    level=lv,
                    metric=metric,
                    value=offset + k + lv,
                    n=10,
                )
                for lv in LEVELS
            ]
    return rows


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A parent with the oracle, a completed and a pruned trial, and an empty child."""
    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("report", str(root / "artifacts"))
    parent = client.create_run(experiment).info.run_id
    log_spectrum(client, parent, _rows(0.1), split="valid", source=ORACLE_SOURCE, figures=False)
    log_spectrum(client, parent, _rows(0.2), split="test", source=ORACLE_SOURCE, figures=False)

    def child():
        tags = {"mlflow.parentRunId": parent}
        return client.create_run(experiment, tags=tags).info.run_id

    completed = child()
    log_spectrum(client, completed, _rows(0.5), split="valid", figures=False)
    log_spectrum(client, completed, _rows(0.6), split="test", figures=False)
    pruned = child()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / ROWS_FILE).write_text(json.dumps(_rows(0.9)))
        client.log_artifacts(pruned, tmp, artifact_path="checkpoint")
    empty = child()
    return dict(
        root=root,
        uri=uri,
        client=client,
        parent=parent,
        completed=completed,
        pruned=pruned,
        empty=empty,
    )


def _figures(client, run_id, split):
    return sorted(
        a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, f"figures/{split}")
    )


def test_a_completed_run_gets_both_splits_with_the_studys_oracle(study, tmp_path):
    client = study["client"]
    drawn = report_run(client, study["completed"], out_dir=tmp_path / "out")
    assert set(drawn) == {"valid", "test"}
    for split in ("valid", "test"):
        names = sorted(p.name for p in drawn[split])
        assert names == _figures(client, study["completed"], split)
        assert "curves_missing_mae.png" in names
        for path in drawn[split]:
            assert path.parent == tmp_path / "out" / split
            assert path.read_bytes().startswith(PNG)
    # The ceiling was found on the parent: a figure with it differs from one without.
    no_oracle = report_run(client, study["completed"], oracle={}, out_dir=tmp_path / "bare")
    with_oracle = {p.name: p.read_bytes() for p in drawn["valid"]}
    assert any(with_oracle[p.name] != p.read_bytes() for p in no_oracle["valid"])


def test_a_pruned_run_is_drawn_from_its_checkpoint_rows(study):
    drawn = report_run(study["client"], study["pruned"])
    assert set(drawn) == {"valid"}
    assert "curves_noise_corr.png" in _figures(study["client"], study["pruned"], "valid")


def test_the_cli_draws_and_writes(study, tmp_path, capsys):
    args = ["report", "--run-id", study["pruned"], "--tracking-uri", study["uri"]]
    assert cli_main([*args, "--out", str(tmp_path / "figs")]) == 0
    out = capsys.readouterr().out
    assert f"valid: 4 figures logged to figures/valid/ of run {study['pruned']}" in out
    assert len(list((tmp_path / "figs" / "valid").glob("*.png"))) == 4


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown", "run 'f00d': not found"),
        ("empty", "no logged spectrum and no checkpoint"),
        ("parent", "a study's parent run has nothing to draw"),
        ("unreachable", "MLflow tracking URI http://127.0.0.1:9/: unreachable"),
        ("no store", "no such store"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(study, tmp_path, capsys, case, expected):
    client = study["client"]
    run_id = {"unknown": "f00d", "empty": study["empty"], "parent": study["parent"]}.get(
        case, study["completed"]
    )
    uri = {"unreachable": "http://127.0.0.1:9/", "no store": f"sqlite:///{tmp_path / 'x.db'}"}
    before = {r: _figures(client, r, "valid") for r in (study["empty"], study["parent"])}
    out = tmp_path / "figs"
    code = cli_main(
        [
            "report",
            "--run-id",
            run_id,
            "--tracking-uri",
            uri.get(case, study["uri"]),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("robustmsa: error: "), err
    assert expected in err[0]
    assert not out.exists()
    assert not (tmp_path / "x.db").exists()
    assert {r: _figures(client, r, "valid") for r in before} == before


def test_evaluate_does_not_create_a_missing_store_either(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'nowhere.db'}"
    assert cli_main(["evaluate", "--run-id", "f00d", "--tracking-uri", uri]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("robustmsa: error: MLflow tracking URI") and "no such store" in line
    assert not (tmp_path / "nowhere.db").exists()
