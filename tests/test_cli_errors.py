"""Bad input to a study script: one line naming the thing, exit status 2, nothing half-written."""

from __future__ import annotations

import subprocess
import sys

import pytest
from paths import REPO
from servers import free_port, venv_env

SCRIPT = REPO / "studies" / "qa_moe_search.py"


# Each case runs a study script in a fresh Python (the whole stack imports: about 4 s).
pytestmark = pytest.mark.integration


def run_study_script(tmp_path, *args, **env):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(tmp_path), *args],
        cwd=tmp_path,
        env=venv_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stderr.strip().splitlines()


def bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: qa_moe\n")
    return path


def unknown_key_yaml(tmp_path):
    path = tmp_path / "unknown.yaml"
    path.write_text("model:\n  name: qa_moe\n  paramz: {}\n")
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "data.source=parquet", "--set", "data.path=/no/such/dataset"],
         "data.path: dataset directory '/no/such/dataset' not found"),
        (["--set", "model.name=transformer9000"], "model.name: unknown model 'transformer9000'"),
        (["--set", "training.lr=fast"], "training.lr: expected float, got 'fast'"),
        ([bad_yaml], "bad.yaml: malformed YAML"),
        ([unknown_key_yaml], "model.paramz: unknown key"),
        (["--set", "data.source=parquet", "--set", "data.path=nope://bucket/mosi"],
         "data.path: nope://bucket/mosi: no usable pyarrow filesystem for scheme 'nope'"),
        (["--set", "study.storage_path=nope://bucket/results"],
         "study.storage_path: nope://bucket/results: no usable pyarrow filesystem"),
        (["--set", "study.gpus_per_trial=0.5"],
         "study.gpus_per_trial: 0.5 GPUs per trial needs training.use_gpu: true"),
        (["--set", "training.use_gpu=true", "--set", "study.gpus_per_trial=1.5"],
         "study.gpus_per_trial: must be a fraction in [0, 1] or a whole number, got 1.5"),
        (["--set", "study.max_concurrent=many"],
         "study.max_concurrent: expected int or 'auto', got 'many'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, expected):
    args = [a if isinstance(a, str) else f"--config={a(tmp_path)}" for a in args]
    code, stderr = run_study_script(tmp_path, *args)
    assert code == 2
    assert len(stderr) == 1, stderr
    assert stderr[0].startswith("robustmsa: error: ")
    assert expected in stderr[0]
    assert not (tmp_path / "mlruns.db").exists()
    assert not (tmp_path / ".robustmsa").exists()


def test_unreachable_mlflow_uri_fails_before_any_run(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    code, stderr = run_study_script(tmp_path, "--smoke-test", MLFLOW_TRACKING_URI=uri)
    assert code == 2
    assert len(stderr) == 1, stderr
    assert f"MLflow tracking URI {uri}: unreachable" in stderr[0]
    assert not (tmp_path / ".robustmsa").exists()


def test_a_job_on_a_cluster_without_mlflow_tracking_uri_is_refused(tmp_path):
    """Inside ``ray job submit`` (RAY_ADDRESS set) the default sqlite store would live in the
    job's temporary working dir: refused before Ray is joined or anything is written."""
    address = f"http://127.0.0.1:{free_port()}"
    code, stderr = run_study_script(tmp_path, "--smoke-test", RAY_ADDRESS=address)
    assert code == 2
    assert len(stderr) == 1, stderr
    assert f"MLFLOW_TRACKING_URI is not set: on the Ray cluster at {address}" in stderr[0]
    assert f"sqlite:///{tmp_path / 'mlruns.db'}" in stderr[0]
    assert not (tmp_path / "mlruns.db").exists()
    assert not (tmp_path / ".robustmsa").exists()
