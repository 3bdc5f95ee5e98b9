"""Real servers for integration tests: a Ray head (``ray start --head --block``) and an MLflow
tracking server (sqlite backend), each on free loopback ports and stopped by its own PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing, contextmanager
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_env(**extra: str) -> dict[str, str]:
    """The environment of the project's venv: its bin first on PATH, auth mode explicit."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"  # STACK.md: set explicitly, or the CLI may need a token
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process we started, then SIGKILL its own process group if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created with start_new_session
        proc.wait(timeout=10)


@contextmanager
def mlflow_server(workdir: Path):
    """An MLflow server on 127.0.0.1 with a sqlite store; yields its URI."""
    port = free_port()
    log = workdir / "mlflow-server.log"
    cmd = [
        str(VENV_BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(workdir / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = venv_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_http(f"{uri}/health", 90, proc, log)
        yield uri
    finally:
        stop(proc)


@contextmanager
def ray_head(workdir: Path, num_cpus: int = 4, env: dict[str, str] | None = None):
    """A Ray head started from the venv (so jobs' ``python`` is the venv's); yields the
    dashboard (job server) address. Jobs inherit the head's environment plus ``env`` (as on a
    cluster whose nodes set ``MLFLOW_TRACKING_URI``). Every port is chosen free, so other Ray
    instances on the machine are untouched; the head is stopped by its PID, never by
    ``ray stop``."""
    dashboard = free_port()
    # A short temp dir: Ray's unix socket paths must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rmsa-ray-", dir="/tmp")
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard,
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--ray-client-server-port": free_port(),
    }
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus",
        str(num_cpus),
        "--dashboard-host",
        "127.0.0.1",
        "--node-ip-address",
        "127.0.0.1",
        "--temp-dir",
        temp_dir,
        "--include-dashboard",
        "true",
        "--disable-usage-stats",
    ]
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    log = workdir / "ray-head.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=venv_env(**(env or {})),
            start_new_session=True,
        )
    try:
        address = f"http://127.0.0.1:{dashboard}"
        _wait_http(f"{address}/api/version", 120, proc, log)
        yield address
    finally:
        stop(proc, timeout=60)
