"""The study driver embedded: local Ray, sqlite MLflow store, Optuna TPE + ASHA."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow.tracking import MlflowClient
from robustmsa.cli import format_result
from robustmsa.cli import main as cli_main
from robustmsa.config import from_dict
from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import open_dataset
from robustmsa.errors import RobustMSAError
from robustmsa.evaluation.floor import floor_metrics, logged_floor, train_median
from robustmsa.evaluation.logged import TEST_TAG
from robustmsa.search.study import SEARCH_METRIC, run_study
from robustmsa.search.trial import ROLE_TAG
from search_smoke import smoke_config


def runs_of(root, uri: str | None = None):
    client = MlflowClient(uri or f"sqlite:///{root / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("qa_moe_search")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def nested_study(tmp_path_factory, local_ray):
    """``(root, config, result)`` of the search smoke study with its late-fusion reference
    (3 trials, search seed 0), run once for the tests that only read it."""
    root = tmp_path_factory.mktemp("nested")
    config = smoke_config(root, **{"study.reference_model": "late_fusion"})
    return root, config, run_study(config, root=root)


def test_study_nests_trials_under_a_finished_parent(nested_study, tmp_path):
    root, config, result = nested_study
    assert len(result.trials) == 3
    client, runs = runs_of(root)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics[SEARCH_METRIC] == pytest.approx(result.best.score)
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id]
    # The late-fusion reference is trained first, then every trial is measured against it.
    (reference,) = [r for r in nested if r.data.tags.get(ROLE_TAG) == "reference"]
    assert reference.data.params["model.name"] == "late_fusion"
    assert reference.info.status == "FINISHED"
    children = [r for r in nested if r is not reference]
    assert len(children) == 3
    assert all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        # Every resolved parameter, once; sampled values differ per trial.
        assert child.data.params["model.name"] == "qa_moe"
        k, e = (int(child.data.params[f"model.params.{p}"]) for p in ("top_k", "num_experts"))
        experts = next(p for p in config.kind_section.space if p.name.endswith("num_experts"))
        assert 1 <= k <= e <= experts.high
        # A completed trial gets its best epoch's validation spectrum and its effective
        # robustness; a pruned one ends with what it logged while training.
        completed = child.data.tags["robustmsa.outcome"] == "completed"
        assert ("spectrum/noise/all/mae" in child.data.metrics) == completed
        for curve in ("missing/all", "noise/all"):
            assert (f"robust/{curve}/effective_mae" in child.data.metrics) == completed
        assert "val/spectrum_score" in child.data.metrics  # logged while training
        logged = {a.path for a in client.list_artifacts(child.info.run_id, "checkpoint")}
        assert "checkpoint/spectrum_valid.json" in logged  # any run can be drawn later
        # The oracle is the study's, on the parent, never copied into a trial's run.
        assert not any(k.startswith(("oracle/", "test/oracle/")) for k in child.data.metrics)
    _check_parent_summary(client, result, reference, children)
    # Provenance: the dataset is an input of every trial run and of the study run.
    digest = None
    for run_id in [result.parent_run_id] + [c.info.run_id for c in nested]:
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert len(inputs) == 1
        assert inputs[0].dataset.name == "synthetic-tiny"
        assert digest in (None, inputs[0].dataset.digest)
        digest = inputs[0].dataset.digest
        assert '"train": 160' in inputs[0].dataset.profile
    dataset = open_dataset(root / "data" / "synthetic-tiny-seed0")
    assert digest == dataset["train"].meta.digest
    # The floor beside the models: the training median scored on each split, on the parent.
    median = train_median(dataset["train"].labels.numpy())
    floors = {s: floor_metrics(median, dataset[s].labels.numpy()) for s in ("valid", "test")}
    assert logged_floor(client, result.parent_run_id)["valid"]["mae"] == pytest.approx(
        floors["valid"]["mae"]
    )
    assert logged_floor(client, result.parent_run_id)["test"]["acc7"] == pytest.approx(
        floors["test"]["acc7"]
    )
    assert result.floor_score == pytest.approx(floors["valid"]["mae"])
    printed = format_result(result, "qa_moe_search").splitlines()
    (line,) = [ln for ln in printed if ln.split()[:1] == ["constant"]]
    assert line.split()[1] == f"{floors['valid']['mae']:.4f}" and "(the floor)" in line
    # The exported best config is complete and re-runnable: it loads and validates as is.
    text = client.download_artifacts(result.parent_run_id, "best_config.yaml", str(tmp_path))
    with open(text) as f:
        exported = from_dict(yaml.safe_load(f))
    assert exported.to_dict() == result.best_config
    best_trial = [c for c in children if c.data.tags["robustmsa.trial_id"] == result.best.trial_id]
    assert exported.training.lr == pytest.approx(float(best_trial[0].data.params["training.lr"]))
    _check_test_split_and_reevaluation(client, result, reference, children, root, tmp_path)


def _check_parent_summary(client, result, reference, children):
    """The parent holds the oracle once per split and the study's summary."""
    parent = client.get_run(result.parent_run_id)
    metrics = parent.data.metrics
    assert "oracle/spectrum/noise/all/mae" in metrics  # the validation points
    assert "test/oracle/spectrum/grid/text/eta_0.25/mae" in metrics  # the test report's
    assert metrics["reference/val/spectrum_score"] == pytest.approx(result.reference.score)
    assert metrics["oracle/val/spectrum_score"] == pytest.approx(result.oracle_score)
    assert result.oracle_score < min(t.score for t in result.trials)  # it is the ceiling
    assert parent.data.tags["robustmsa.reference_run_id"] == reference.info.run_id
    selected = parent.data.tags["robustmsa.selected_run_id"]
    assert selected == result.selected_run_id
    assert client.get_run(selected).data.tags["robustmsa.trial_id"] == result.best.trial_id
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(parent.info.run_id, "tables/study_trials.json", tmp)
        table = json.loads(Path(path).read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    outcomes = {c.info.run_id: c.data.tags["robustmsa.outcome"] for c in children}
    assert {r["run_id"]: r["outcome"] for r in rows} == outcomes


def _check_test_split_and_reevaluation(client, result, reference, children, root, tmp_path):
    """Only the selected trial and the reference were evaluated on test, once (tagged), and
    only they have figures. The logged checkpoint re-evaluates (``robustmsa evaluate``) to
    exactly the logged numbers. ``root``: the study's; ``tmp_path``: where outputs go."""
    presented = {result.selected_run_id, reference.info.run_id}
    for run in [*children, reference]:
        run = client.get_run(run.info.run_id)
        shown = run.info.run_id in presented
        assert (TEST_TAG in run.data.tags) == shown
        assert any(k.startswith("test/spectrum/") for k in run.data.metrics) == shown
        assert bool(client.list_artifacts(run.info.run_id, "figures")) == shown
    run = client.get_run(result.selected_run_id)
    # The test report covers the whole spectrum: every protocol, with the λ x η heat maps.
    for key in ("test/robust/patterns/worst_mae", "test/robust/joint/text/auilc_mae"):
        assert key in run.data.metrics
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures/test")}
    assert {f"figures/test/heatmap_{m}_mae.png" for m in MODALITIES} <= figures
    assert client.list_artifacts(run.info.run_id, "figures/valid")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    out = tmp_path / "valid.parquet"
    args = ["evaluate", "--run-id", run.info.run_id, "--tracking-uri", uri]
    assert cli_main([*args, "--split", "valid", "--out", str(out)]) == 0
    logged = client.download_artifacts(
        run.info.run_id, "spectrum/spectrum_valid.parquet", str(tmp_path)
    )
    # The same checkpoint on the same corrupted inputs: equal up to the float summation order
    # of a process with another thread count (the trial ran in a Ray worker).
    again, before = pq.read_table(out).to_pylist(), pq.read_table(logged).to_pylist()
    assert [{**r, "value": None} for r in again] == [{**r, "value": None} for r in before]
    for a, b in zip(again, before, strict=True):
        assert a["value"] == pytest.approx(b["value"], rel=1e-7, abs=1e-9, nan_ok=True), a
    assert cli_main([*args, "--split", "test", "--out", str(out)]) == 0
    for row in pq.read_table(out).to_pylist():
        key = f"test/spectrum/{row['protocol']}/{row['modalities']}/{row['metric']}"
        history = client.get_metric_history(run.info.run_id, key)
        logged_value = {m.step: m.value for m in history}[round(row["level"] * 100)]
        assert row["value"] == pytest.approx(logged_value, rel=1e-9, abs=1e-12)
    assert TEST_TAG in client.get_run(run.info.run_id).data.tags  # nothing re-logged


def test_seeded_search_samples_the_same_first_points(nested_study, tmp_path):
    # TPE starts with seeded random sampling (its first max(2, n // 2) points): the same seed
    # proposes the same points, whether a study has 2 trials or 3 and a reference or not. The
    # second study names its dataset and its Tune storage by file:// URIs (the code path of
    # s3:// and gs://, tests/integration/test_job_submit.py) and evaluates every completed
    # trial on test (the earlier policy): that changes nothing else.
    root, _, first = nested_study
    data_uri = (root / "data" / "synthetic-tiny-seed0").as_uri()
    storage_uri = (tmp_path / "b" / "tune").as_uri()
    uris = {"data.source": "parquet", "data.path": data_uri, "study.storage_path": storage_uri}
    uris["evaluation.test_policy"] = "completed"
    second = run_study(
        smoke_config(tmp_path / "b", **{"search.num_samples": 2, **uris}), root=tmp_path / "b"
    )
    key = lambda t: tuple(sorted(t.params.items()))  # noqa: E731
    assert len(second.trials) == 2
    assert set(map(key, second.trials)) <= set(map(key, first.trials))
    assert second.storage_path == storage_uri
    checkpoints = list((tmp_path / "b" / "tune").rglob("checkpoint_*"))
    assert len({c.parent for c in checkpoints}) >= 2, checkpoints  # every trial's, there
    assert not (tmp_path / "b" / ".robustmsa" / "ray_results").exists()
    _, runs = runs_of(tmp_path / "b")
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {r.data.params["data.path"] for r in trials} == {data_uri}
    for trial in trials:
        completed = trial.data.tags["robustmsa.outcome"] == "completed"
        assert (TEST_TAG in trial.data.tags) == completed, trial.data.tags
    assert any(TEST_TAG in t.data.tags for t in trials)
    digests = {i.dataset.digest for r in trials for i in r.inputs.dataset_inputs}
    _, first_runs = runs_of(root)
    assert digests == {i.dataset.digest for r in first_runs for i in r.inputs.dataset_inputs}


def kill_when_it_trains(root: Path, wanted, uri: str) -> threading.Thread:
    """Fault injection: a thread that waits for the first child run of the study in ``root``
    for which ``wanted(run)`` holds, then SIGKILLs the process training it (its
    ``robustmsa.process`` tag), by PID. The study's data passes every check of its set-up: the
    fault happens inside the trial, where only the trial's own failure handling sees it."""

    def watch() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                _, runs = runs_of(root, uri)
            except Exception:  # the store or the experiment does not exist yet
                runs = []
            for run in runs:
                process = run.data.tags.get("robustmsa.process")
                # Once it trains (an epoch logged): not amid the burst of writes that opens a
                # run, since a process killed inside a sqlite write holds the store up.
                training = "val/spectrum_score" in run.data.metrics
                if process and training and run.info.status == "RUNNING" and wanted(run):
                    os.kill(int(process.rpartition(":")[2]), signal.SIGKILL)
                    return
            # Not faster: the study writes to the same sqlite store, which locks per write.
            time.sleep(0.3)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# Trials long enough (a few seconds) for the fault to land inside them; no restart.
LONG_TRIALS = {"training.epochs": 10, "training.batch_size": 4, "study.max_failures": 0}


@pytest.fixture
def tracking_server(tmp_path):
    """A real MLflow server: a process killed mid-request cannot hold its store locked, as a
    killed writer can hold a sqlite file that several processes write to."""
    from servers import mlflow_server

    with mlflow_server(tmp_path) as uri:
        yield uri


def test_a_failing_reference_names_itself_and_fails_the_study(tmp_path, local_ray, tracking_server):
    config = smoke_config(
        tmp_path,
        **{"study.reference_model": "late_fusion", "search.num_samples": 1},
        **LONG_TRIALS,
        **{"tracking.uri": tracking_server},
    )
    killer = kill_when_it_trains(
        tmp_path, lambda r: r.data.tags.get(ROLE_TAG) == "reference", tracking_server
    )
    with pytest.raises(RobustMSAError, match=r"reference: variants failed \(reference: "):
        run_study(config, root=tmp_path)
    killer.join(timeout=10)
    _, runs = runs_of(tmp_path, tracking_server)
    # The reference trains beside the search: the study names the reference's failure, ends
    # its parent FAILED with that error, and leaves no run RUNNING.
    (reference,) = [r for r in runs if r.data.tags.get(ROLE_TAG) == "reference"]
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert reference.info.status == parent.info.status == "FAILED"
    assert reference.data.tags["robustmsa.outcome"] == "error"
    assert "reference: variants failed" in parent.data.tags["robustmsa.error"]
    assert all(r.info.status in ("FAILED", "KILLED", "FINISHED") for r in runs)


def test_a_failing_trial_ends_its_run_failed_and_the_parent_failed(
    tmp_path, local_ray, tracking_server
):
    config = smoke_config(
        tmp_path, **{"search.num_samples": 1}, **LONG_TRIALS, **{"tracking.uri": tracking_server}
    )
    killer = kill_when_it_trains(tmp_path, lambda r: True, tracking_server)
    with pytest.raises(RobustMSAError, match="no trial finished"):
        run_study(config, root=tmp_path)
    killer.join(timeout=10)
    _, runs = runs_of(tmp_path, tracking_server)
    assert len(runs) == 2
    assert all(r.info.status == "FAILED" for r in runs)
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert child.data.tags["robustmsa.outcome"] == "error"
    assert "no trial finished" in parent.data.tags["robustmsa.error"]


def test_a_multi_objective_search_logs_its_pareto_front(tmp_path, local_ray):
    from robustmsa.search.kinds.search import PARETO_TABLE, knee, pareto_front

    objectives = ["val/spectrum_score", "val/mae"]
    config = smoke_config(
        tmp_path, **{"search.objectives": "[val/spectrum_score, val/mae]", "training.epochs": 2}
    )
    result = run_study(config, root=tmp_path)
    client, runs = runs_of(tmp_path)
    by_trial = {r.data.tags.get("robustmsa.trial_id"): r for r in runs}
    for t in result.trials:
        # Both objectives at the epoch the trial keeps, as the trial logged them.
        assert t.scores["val/mae"] == pytest.approx(
            by_trial[t.trial_id].data.metrics["best/val/mae"]
        )
        assert t.scores["val/spectrum_score"] == pytest.approx(t.score)
    assert result.pareto == pareto_front(result.trials, objectives)
    assert result.best is knee(result.pareto, objectives)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["robustmsa.selected_run_id"] == result.best.run_id
    names = {a.path for a in client.list_artifacts(result.parent_run_id, "tables")}
    assert PARETO_TABLE in names
