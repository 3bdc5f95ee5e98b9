"""``robustmsa reproduce`` on the session's smoke study: the selected trial re-trained bit for
bit, a confirm study over two seeds (in a copy of the store: the smoke store is read-only for
its users), and bad input refused before anything is written."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from robustmsa.cli import main
from robustmsa.search.kinds.confirm import CONFIRMED, DIFFERENCE, REFERENCE
from robustmsa.search.reproduce import SELECTED_TAG

pytestmark = pytest.mark.integration


def _parent(study) -> str:
    client = MlflowClient(study.tracking_uri)
    exp = client.get_experiment_by_name(study.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`robustmsa.study` != ''")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return max(parents, key=lambda r: r.info.start_time).info.run_id


def _copy_store(study, tmp_path) -> str:
    shutil.copy(study.root / "mlruns.db", tmp_path / "mlruns.db")
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


def _run_count(uri: str) -> int:
    client = MlflowClient(uri)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


def test_the_selected_trial_is_reproduced_bit_for_bit(smoke_study, capsys):
    parent = _parent(smoke_study)
    rc = main(["reproduce", "--run-id", parent, "--tracking-uri", smoke_study.tracking_uri])
    out = capsys.readouterr().out
    selected = MlflowClient(smoke_study.tracking_uri).get_run(parent).data.tags[SELECTED_TAG]
    assert rc == 0, out
    assert f"run {selected}: reproduced bit for bit" in out


def test_confirm_over_two_seeds_pairs_the_reference(smoke_study, tmp_path):
    """Run as a user runs it, in a process of its own (it starts its own Ray and quiets its
    logs process-wide)."""
    uri = _copy_store(smoke_study, tmp_path)
    parent = _parent(smoke_study)
    done = subprocess.run(
        [sys.executable, "-m", "robustmsa.cli", "reproduce", "--run-id", parent, "--seeds", "2",
         "--tracking-uri", uri, "--root", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    confirm = next(
        r
        for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
        if r.data.params.get("study.kind") == "confirm" and "mlflow.parentRunId" not in r.data.tags
    )
    assert confirm.info.status == "FINISHED"
    children = client.search_runs(
        [confirm.info.experiment_id], f"tags.`mlflow.parentRunId` = '{confirm.info.run_id}'"
    )
    by_role = {c.data.tags["robustmsa.role"]: c for c in children}
    assert set(by_role) == {"seed-0", "seed-1", "reference-seed-0", "reference-seed-1"}
    assert by_role["reference-seed-1"].data.params["model.name"] == "late_fusion"
    assert by_role["seed-1"].data.params["training.seed"] == "1"
    metrics = confirm.data.metrics
    score = "best/val/spectrum_score"
    mine = [by_role[f"seed-{s}"].data.metrics[score] for s in (0, 1)]
    theirs = [by_role[f"reference-seed-{s}"].data.metrics[score] for s in (0, 1)]
    key = "confirm/valid/{}/spectrum_score/{}"
    assert metrics[key.format(CONFIRMED, "mean")] == pytest.approx(sum(mine) / 2)
    assert metrics[key.format(REFERENCE, "mean")] == pytest.approx(sum(theirs) / 2)
    diffs = [a - b for a, b in zip(mine, theirs, strict=True)]
    assert metrics[key.format(DIFFERENCE, "mean")] == pytest.approx(sum(diffs) / 2)
    # Two seeds: the sample std is |d0 - d1| / sqrt(2); the interval is centred on the mean.
    assert metrics[key.format(DIFFERENCE, "std")] == pytest.approx(
        abs(diffs[0] - diffs[1]) / 2**0.5
    )
    low, high = (
        metrics[key.format(DIFFERENCE, "ci_low")],
        metrics[key.format(DIFFERENCE, "ci_high")],
    )
    assert low < sum(diffs) / 2 < high
    assert "confirm/test/confirmed/worst_point_mae/mean" in metrics
    # Both splits summarise the same points (the validation protocols), as a comparison does.
    summaries = {
        split: {k.split("/", 3)[3] for k in metrics if k.startswith(f"confirm/{split}/confirmed/")}
        for split in ("valid", "test")
    }
    assert summaries["test"] == summaries["valid"]
    artifacts = {a.path for a in client.list_artifacts(confirm.info.run_id, "confirm")}
    assert {"confirm/confirm.parquet", "confirm/confirm_spectrum_score.png"} <= artifacts
    assert "Spectrum score over seeds" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "0"], "--seeds: a confirmation needs at least 2 seeds, got 0"),
        (["--run-id-override", "nope"], "run 'nope': not found"),
    ],
)
def test_bad_reproduce_input_is_one_line_and_writes_nothing(
    smoke_study, tmp_path, capsys, args, message
):
    uri = _copy_store(smoke_study, tmp_path)
    before = _run_count(uri)
    run_id = _parent(smoke_study)
    if args[0] == "--run-id-override":
        run_id, args = args[1], []
    rc = main(["reproduce", "--run-id", run_id, "--tracking-uri", uri, *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert _run_count(uri) == before


def test_a_run_without_checkpoint_or_a_comparison_parent_is_refused(
    smoke_study, smoke_comparison, tmp_path, capsys
):
    uri = _copy_store(smoke_comparison, tmp_path)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(smoke_comparison.experiment)
    bare = client.create_run(exp.experiment_id).info.run_id
    before = _run_count(uri)
    assert main(["reproduce", "--run-id", bare, "--tracking-uri", uri]) == 2
    assert f"run {bare}: no logged checkpoint/config.yaml" in capsys.readouterr().err
    compare = _parent(smoke_comparison)
    assert main(["reproduce", "--run-id", compare, "--tracking-uri", uri, "--seeds", "2"]) == 2
    assert "(kind compare_models) without a selected trial" in capsys.readouterr().err
    assert _run_count(uri) == before
