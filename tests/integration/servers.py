"""Real servers for integration tests, each on free loopback ports and stopped by its own PID: an
MLflow tracking server (sqlite backend), an S3 server (moto), and a Ray head (``ray start --head
--block``) that autoscales over fake nodes, started from a Python that cannot import robustmsa."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port never handed out before in this process: the kernel may give a
    just-closed port again, and a Ray head given the same port for two components refuses to
    start ("trying to use a port number ... used by other components")."""
    while True:
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def venv_env(**extra: str) -> dict[str, str]:
    """The environment of the project's venv: its bin first on PATH, auth mode explicit."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "disabled"  # docs/stack.md: set explicitly, or the CLI may need a token
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
def serving(
    cmd: list[str], env: dict[str, str], log: Path, ready: str, wait_s: float, stop_s: float = 30
):
    """Run ``cmd`` (its output to ``log``) in a session of its own until ``ready`` answers
    HTTP 200 (within ``wait_s``); yield, then stop it by its PID (`stop`, ``stop_s``)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_http(ready, wait_s, proc, log)
        yield proc
    finally:
        stop(proc, timeout=stop_s)


@contextmanager
def mlflow_server(
    workdir: Path,
    backend_store_uri: str | None = None,
    artifacts: Path | None = None,
    port: int | None = None,
):
    """An MLflow server on 127.0.0.1 with a sqlite store; yields its URI.

    A new store in ``workdir`` by default; ``backend_store_uri`` and ``artifacts`` (its
    ``--artifacts-destination``) serve an existing one, e.g. an embedded study's. ``port``:
    a given one (a server restarted where its clients expect it), else a free one."""
    port = port or free_port()
    log = workdir / f"mlflow-server-{time.time_ns()}.log"
    cmd = [
        str(VENV_BIN / "mlflow"), "server",
        "--backend-store-uri", backend_store_uri or f"sqlite:///{workdir / 'mlflow.db'}",
        "--serve-artifacts", "--artifacts-destination", str(artifacts or workdir / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = venv_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    uri = f"http://127.0.0.1:{port}"
    with serving(cmd, env, log, f"{uri}/health", 90):
        yield uri


@dataclass(frozen=True)
class SmokeStudy:
    """An embedded smoke study's outputs (`run_smoke_study`)."""

    root: Path  # the study's --root: its sqlite store, artifacts, Ray results, data
    tracking_uri: str  # sqlite:///<root>/mlruns.db
    artifacts: Path  # <root>/mlartifacts, the experiments' artifact locations
    experiment: str  # the MLflow experiment's name
    stdout: str  # what the study printed (format_result's summary at its end)
    wall_s: float


def run_smoke_study(
    root: Path, script: str = "studies/qa_moe_search.py", timeout: float = 900
) -> SmokeStudy:
    """Run ``script --smoke-test --root root`` embedded (local Ray, sqlite MLflow store) with
    the venv's Python, as a user would: no tracking URI, no Ray address in its environment.
    Fails with the tail of its output when it does not exit 0 within ``timeout`` (then its
    process group, its local Ray included, is killed). Its output is also in root/study.log."""
    from paths import REPO

    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    cmd = [sys.executable, script, "--smoke-test", "--root", str(root)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=venv_env(), text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created with start_new_session
        stdout, stderr = proc.communicate()
    wall_s = time.time() - started
    (root / "study.log").write_text(stdout + stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited with {proc.returncode} after {wall_s:.0f} s:\n"
            f"{(stdout + stderr)[-4000:]}"
        )
    return SmokeStudy(
        root=root,
        tracking_uri=f"sqlite:///{root / 'mlruns.db'}",
        artifacts=root / "mlartifacts",
        experiment="qa_moe_search",  # tracking.experiment of studies/configs/qa_moe_search.yaml
        stdout=stdout,
        wall_s=wall_s,
    )


def stock_python(workdir: Path) -> Path:
    """A Python like a stock Ray image's: every declared dependency importable, robustmsa not.

    A venv without pip whose one ``.pth`` line adds the project venv's site-packages as a plain
    directory: its packages import, but the ``.pth`` files in it are not processed, so the
    editable install of robustmsa (a ``.pth`` path entry) is absent. Returns its ``bin``, which
    also gets a ``ray`` command."""
    import site
    import sysconfig

    root = workdir / "stock-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    project_site = Path(sysconfig.get_paths()["purelib"])
    assert project_site.is_dir() and project_site in {Path(p) for p in site.getsitepackages()}
    (root / "lib" / version / "site-packages" / "deps.pth").write_text(f"{project_site}\n")
    ray_cmd = root / "bin" / "ray"
    ray_cmd.write_text(
        f"#!{root / 'bin' / 'python'}\nimport sys\nfrom ray.scripts.scripts import main\n"
        "sys.exit(main())\n"
    )
    ray_cmd.chmod(0o755)
    return root / "bin"


def stock_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    """`venv_env` for processes of the stock Python: its ``bin`` first on PATH, and no
    ``PYTHONPATH`` that could lead it to this checkout's package."""
    env = venv_env(PATH=f"{bin_dir}{os.pathsep}{venv_env()['PATH']}", **extra)
    env.pop("PYTHONPATH", None)
    env.update({k: v for k, v in extra.items() if k == "PYTHONPATH"})
    return env


@contextmanager
def s3_server(workdir: Path):
    """A moto S3 server on loopback; yields the AWS environment that points clients at it."""
    port = free_port()
    log = workdir / "moto.log"
    cmd = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    endpoint = f"http://127.0.0.1:{port}"
    with serving(cmd, venv_env(), log, f"{endpoint}/moto-api/", 60):
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }


# The autoscaler of `ray start --autoscaling-config` with Ray's fake multi-node provider, each node
# in a temp dir of its own (`fake_nodes.py`): worker nodes are raylets started on this machine.
# Node updaters and launch-config checks are off (there is nothing to ssh into), as in Ray's own
# fake_multi_node example.
FAKE_PROVIDER = {
    "type": "external",
    "module": "fake_nodes.OwnDirFakeMultiNodeProvider",
    "use_node_id_as_ip": True,
    "disable_node_updaters": True,
    "disable_launch_config_check": True,
}
_EMPTY_LAUNCHER_KEYS = {
    "auth": {},
    "docker": {},
    "file_mounts": {},
    "cluster_synced_files": [],
    "file_mounts_sync_continuously": False,
    "rsync_exclude": [],
    "rsync_filter": [],
    "initialization_commands": [],
    "setup_commands": [],
    "head_setup_commands": [],
    "worker_setup_commands": [],
    "head_start_ray_commands": [],
    "worker_start_ray_commands": [],
}


@contextmanager
def autoscaling_ray_head(
    workdir: Path,
    bin_dir: Path,
    head_cpus: int,
    worker_types: dict,
    idle_timeout_minutes: float,
    env: dict[str, str] | None = None,
):
    """A Ray head with an autoscaler over fake worker nodes, started from ``bin_dir``'s Python.

    The cluster config is written where ``ray up`` leaves it on a launcher head
    (``~/ray_bootstrap_config.yaml``, with HOME set to a folder of ``workdir``) and handed to
    ``ray start --autoscaling-config``. Never ``ray stop`` (it kills every Ray on the machine),
    never Ray's ``AutoscalingCluster`` (it calls ``ray stop --force``): the head is stopped by
    its PID, and the fake nodes it started go with it. Yields the dashboard address."""
    import json

    home = workdir / "head-home"
    home.mkdir()
    gcs_port = free_port()
    # A short temp dir: Ray's unix socket paths must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rmsa-ray-", dir="/tmp")
    config = {
        "cluster_name": "fake",
        "max_workers": sum(t["max_workers"] for t in worker_types.values()),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            **FAKE_PROVIDER,
            "gcs_address": f"127.0.0.1:{gcs_port}",
            "node_temp_root": temp_dir,
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": head_cpus},
                "node_config": {},
                "max_workers": 0,
            },
            **worker_types,
        },
        **_EMPTY_LAUNCHER_KEYS,
    }
    bootstrap = home / "ray_bootstrap_config.yaml"
    bootstrap.write_text(json.dumps(config, indent=1))  # JSON is YAML
    dashboard = free_port()
    cmd = [
        str(bin_dir / "ray"), "start", "--head", "--block",
        "--autoscaling-config", str(bootstrap),
        "--num-cpus", str(head_cpus),
        "--port", str(gcs_port),
        "--dashboard-port", str(dashboard),
        "--dashboard-host", "127.0.0.1",
        "--node-ip-address", "127.0.0.1",
        "--temp-dir", temp_dir,
        "--include-dashboard", "true",
        "--disable-usage-stats",
        "--ray-client-server-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()),
        "--node-manager-port", str(free_port()),
        "--object-manager-port", str(free_port()),
    ]  # fmt: skip
    head_env = stock_env(
        bin_dir,
        HOME=str(home),
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        PYTHONPATH=str(Path(__file__).resolve().parent),  # the autoscaler imports fake_nodes
        **(env or {}),
    )
    log = workdir / "ray-autoscaling-head.log"
    address = f"http://127.0.0.1:{dashboard}"
    try:
        with serving(cmd, head_env, log, f"{address}/api/version", 120, stop_s=60):
            yield address
    finally:
        _kill_session_leftovers(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)  # its sessions' logs: 20 MB a run in /tmp


def _kill_session_leftovers(temp_dir: str) -> None:
    """SIGKILL what is left of the processes of our own Ray session (fake worker nodes whose
    raylet outlived the head): those whose command line names our unique ``temp_dir``."""
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if temp_dir in cmdline and int(proc_dir.name) != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(int(proc_dir.name), signal.SIGKILL)


def alive_nodes(dashboard: str) -> int:
    """How many nodes of the cluster are alive, from its dashboard's state API."""
    import json

    with urllib.request.urlopen(f"{dashboard}/api/v0/nodes?limit=1000", timeout=10) as resp:
        nodes = json.load(resp)["data"]["result"]["result"]
    return sum(1 for n in nodes if n["state"] == "ALIVE")
