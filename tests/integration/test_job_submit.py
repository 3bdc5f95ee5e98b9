"""The smoke study through a real `ray job submit` to a real head, logging to a real MLflow
server: the product's cluster path, end to end."""

from __future__ import annotations

import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient
from paths import REPO
from servers import VENV_BIN, mlflow_server, ray_head, venv_env

pytestmark = pytest.mark.integration

SMOKE_TRIALS = 2  # robustmsa.cli.SMOKE_OVERRIDES["search.num_samples"]


def test_smoke_study_via_ray_job_submit(tmp_path):
    from robustmsa.cli import SMOKE_OVERRIDES

    assert SMOKE_OVERRIDES["search.num_samples"] == SMOKE_TRIALS
    with (
        mlflow_server(tmp_path) as tracking_uri,
        ray_head(tmp_path, env={"MLFLOW_TRACKING_URI": tracking_uri}) as address,
    ):
        started = time.time()
        cmd = [
            str(VENV_BIN / "ray"), "job", "submit", "--address", address,
            "--working-dir", ".", "--", "python", "studies/qa_moe_search.py", "--smoke-test",
        ]  # fmt: skip
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=venv_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:]
        assert "succeeded" in output, output[-6000:]
        assert "Best trial" in output, output[-6000:]
        assert f"MLflow: {tracking_uri}" in output, output[-6000:]
        print(f"ray job submit smoke study: {time.time() - started:.1f} s")

        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name("qa_moe_search")
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1
        parent = parents[0]
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics["best/val/spectrum_score"] > 0
        nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        # The late-fusion reference (effective robustness) and the searched trials.
        references = [r for r in nested if r.data.tags.get("robustmsa.role") == "reference"]
        assert [r.data.params["model.name"] for r in references] == ["late_fusion"]
        children = [r for r in nested if r not in references]
        assert len(children) == SMOKE_TRIALS
        for child in children:
            assert "robust/missing/all/effective_mae" in child.data.metrics
            # On synthetic data the Bayes oracle's curve sits beside the model's.
            assert "oracle/spectrum/missing/all/mae" in child.data.metrics
            assert child.info.status == "FINISHED", child.data.tags
            assert child.data.tags["robustmsa.outcome"] in {"completed", "pruned"}
            assert child.data.params["model.name"] == "qa_moe"
            for protocol in ("missing", "noise"):
                history = client.get_metric_history(
                    child.info.run_id, f"spectrum/{protocol}/all/mae"
                )
                assert sorted(m.step for m in history) == list(range(0, 101, 10))
            assert "spectrum/clean/all/acc7" in child.data.metrics
            assert "robust/missing/all/auilc_mae" in child.data.metrics
            epochs = client.get_metric_history(child.info.run_id, "train/loss")
            # ASHA (grace period 1) may prune a trial after its first epoch.
            epochs_run = int(child.data.tags["robustmsa.epochs_run"])
            assert [m.step for m in epochs] == list(range(1, epochs_run + 1))
            assert (child.data.tags["robustmsa.outcome"] == "completed") == (epochs_run == 2)
            artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "checkpoint")}
            assert artifacts == {"checkpoint/best_model.pt", "checkpoint/config.yaml"}
        # No run of the study is left RUNNING.
        assert all(r.info.status != "RUNNING" for r in runs)
