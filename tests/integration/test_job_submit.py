"""The product's cluster path, end to end, on one machine.

One smoke study, submitted with the documented ``ray job submit --working-dir . -- python
studies/qa_moe_search.py`` to a real head that autoscales over Ray's fake multi-node provider
and runs a Python that cannot import robustmsa (a stock Ray image with the declared
dependencies). Its dataset and its Tune storage are ``s3://`` URIs on a real S3 server on
loopback (moto), and it logs to a real MLflow server. The head holds no CPU, so every trial
waits for the autoscaler's worker nodes; they go away again after the idle timeout.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time

import pytest
from mlflow.tracking import MlflowClient
from paths import REPO
from servers import (
    alive_nodes,
    autoscaling_ray_head,
    mlflow_server,
    s3_server,
    stock_env,
    stock_python,
)

pytestmark = pytest.mark.integration

SMOKE_TRIALS = 2  # KINDS["search"].smoke["search.num_samples"]
BUCKET = "robustmsa-it"
WORKER_CPUS = 2
MAX_WORKERS = 2
IDLE_TIMEOUT_MIN = 0.1


class NodeCounts:
    """Polls the cluster's alive node count once a second in a thread: ``[(seconds, n)]``."""

    def __init__(self, dashboard: str):
        self.dashboard = dashboard
        self.samples: list[tuple[float, int]] = []
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.time() - self.started, alive_nodes(self.dashboard)))
            self._stop.wait(1.0)

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.samples and self.samples[-1][1] == count:
                return True
            time.sleep(1.0)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _upload_dataset(tmp_path, aws: dict[str, str]):
    """The tiny synthetic dataset, written to the S3 server; returns its URI, its digest and
    the S3 filesystem."""
    import pyarrow.fs as pafs
    from robustmsa.data.parquet import open_dataset
    from robustmsa.data.synthetic import generate

    local = generate("tiny", tmp_path / "tiny", seed=0)
    s3 = pafs.S3FileSystem(
        access_key=aws["AWS_ACCESS_KEY_ID"],
        secret_key=aws["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=aws["AWS_ENDPOINT_URL"],
        region=aws["AWS_DEFAULT_REGION"],
        allow_bucket_creation=True,
    )
    s3.create_dir(BUCKET)
    pafs.copy_files(str(local), f"{BUCKET}/data/tiny", destination_filesystem=s3)
    digest = open_dataset(local)["train"].meta.digest
    return f"s3://{BUCKET}/data/tiny", digest, s3


def test_study_job_on_stock_ray_autoscales_and_uses_s3(tmp_path):
    from robustmsa.provenance import source_digest
    from robustmsa.search.kinds import KINDS

    assert KINDS["search"].smoke["search.num_samples"] == SMOKE_TRIALS
    bin_dir = stock_python(tmp_path)
    cannot = subprocess.run(
        [str(bin_dir / "python"), "-c", "import ray, torch, mlflow; import robustmsa"],
        capture_output=True,
        text=True,
        env=stock_env(bin_dir),
    )
    assert "No module named 'robustmsa'" in cannot.stderr, cannot.stderr[-2000:]

    with s3_server(tmp_path) as aws, mlflow_server(tmp_path) as tracking_uri:
        data_uri, digest, s3 = _upload_dataset(tmp_path, aws)
        worker_types = {
            "cpu_worker": {
                "resources": {"CPU": WORKER_CPUS},
                "node_config": {},
                "min_workers": 0,
                "max_workers": MAX_WORKERS,
            }
        }
        with autoscaling_ray_head(
            tmp_path,
            bin_dir,
            head_cpus=0,  # no trial fits on the head: the search must scale out
            worker_types=worker_types,
            idle_timeout_minutes=IDLE_TIMEOUT_MIN,
            env={"MLFLOW_TRACKING_URI": tracking_uri, **aws},
        ) as address:
            nodes = NodeCounts(address)
            assert nodes.wait_for(1, 30), nodes.samples
            submitted = time.time() - nodes.started
            cmd = [
                str(bin_dir / "ray"), "job", "submit", "--address", address,
                "--working-dir", ".", "--",
                "python", "studies/qa_moe_search.py", "--smoke-test",
                "--set", "data.source=parquet",
                "--set", f"data.path={data_uri}",
                "--set", f"study.storage_path=s3://{BUCKET}/results",
                "--set", "study.max_concurrent=auto",
            ]  # fmt: skip
            env = stock_env(bin_dir)
            proc = subprocess.run(
                cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900
            )
            output = proc.stdout + proc.stderr
            finished = time.time() - nodes.started
            # Scale-in: every worker node goes once the study left it idle.
            scaled_in = nodes.wait_for(1, 60 + IDLE_TIMEOUT_MIN * 60)
            nodes.stop()
        print(f"node counts (s, alive): {nodes.samples}")
        assert proc.returncode == 0, output[-6000:]
        assert "succeeded" in output, output[-6000:]
        assert "Best trial" in output, output[-6000:]
        assert f"MLflow: {tracking_uri}" in output, output[-6000:]

        # Scale-out while trials waited, back to the head alone afterwards.
        during = [n for t, n in nodes.samples if submitted <= t <= finished]
        assert max(during) >= 2, nodes.samples
        assert max(during) <= 1 + MAX_WORKERS, nodes.samples
        assert scaled_in, nodes.samples

        # The job's own copy of the package ran everywhere: the driver and every trial.
        repo_digest = source_digest(REPO / "platform" / "robustmsa")
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name("qa_moe_search")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1
        parent = parents[0]
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics["best/val/spectrum_score"] > 0
        # max_concurrent auto: the autoscaler's ceiling (2 workers x 2 CPUs) holds 4 one-CPU
        # trials, capped by the 2 the smoke study samples.
        assert parent.data.params["study.resolved_max_concurrent"] == str(SMOKE_TRIALS)
        nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        for run in [parent, *nested]:
            tags = run.data.tags
            assert tags["robustmsa.code.digest"] == repo_digest, tags
            assert "runtime_resources" in tags["robustmsa.code.path"], tags
            assert not tags["robustmsa.code.path"].startswith(str(REPO)), tags
        assert f"from {parent.data.tags['robustmsa.code.path']}" in output

        # The late-fusion reference (effective robustness) and the searched trials.
        references = [r for r in nested if r.data.tags.get("robustmsa.role") == "reference"]
        assert [r.data.params["model.name"] for r in references] == ["late_fusion"]
        children = [r for r in nested if r not in references]
        assert len(children) == SMOKE_TRIALS
        for child in children:
            assert child.info.status == "FINISHED", child.data.tags
            assert child.data.tags["robustmsa.outcome"] in {"completed", "pruned"}
            assert child.data.params["model.name"] == "qa_moe"
            assert child.data.params["data.path"] == data_uri
            completed = child.data.tags["robustmsa.outcome"] == "completed"
            # A completed trial gets its validation spectrum and effective robustness; a
            # pruned one ends with what it logged while training (the evaluation policy).
            assert ("robust/missing/all/effective_mae" in child.data.metrics) == completed
            for protocol in ("missing", "noise") if completed else ():
                history = client.get_metric_history(
                    child.info.run_id, f"spectrum/{protocol}/all/mae"
                )
                assert sorted(m.step for m in history) == list(range(0, 101, 10))
            epochs = client.get_metric_history(child.info.run_id, "train/loss")
            epochs_run = int(child.data.tags["robustmsa.epochs_run"])
            assert [m.step for m in epochs] == list(range(1, epochs_run + 1))
            assert completed == (epochs_run == 2)
            artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "checkpoint")}
            assert artifacts == {
                f"checkpoint/{name}"
                for name in ("best_model.pt", "config.yaml", "state.json", "spectrum_valid.json")
            }
            # Read from S3: the dataset the trial logged is the uploaded one.
            inputs = child.inputs.dataset_inputs
            assert any(i.dataset.digest.startswith(digest[:8]) for i in inputs), inputs
        assert all(r.info.status != "RUNNING" for r in runs)
        # The test split once, for the selected trial and the reference, read from S3's
        # checkpoints and the job's dataset on the worker nodes.
        tested = {r.info.run_id for r in nested if "robustmsa.test_evaluated" in r.data.tags}
        selected = parent.data.tags["robustmsa.selected_run_id"]
        assert tested == {selected, references[0].info.run_id}

        # Tune's results and every trial's checkpoints were written to S3.
        import pyarrow.fs as pafs

        written = s3.get_file_info(pafs.FileSelector(f"{BUCKET}/results", recursive=True))
        names = [f.path for f in written if f.type == pafs.FileType.File]
        assert any(n.endswith("best_model.pt") for n in names), names[:50]
        assert sum("/checkpoint_" in n for n in names) >= SMOKE_TRIALS, names[:50]
