"""The cluster-launcher YAMLs of ``cluster/``: Ray 2.60's own validation passes, and the files
keep the project's contract (a head without trials, CPU and GPU workers that scale from 0,
declared resources, the stock Ray image at the pinned version, the pinned install step, token
auth, MLflow in the node environment, headers that name the commands)."""

from __future__ import annotations

import re

import pytest
import yaml
from paths import REPO
from robustmsa.cluster import check_launcher_config

LAUNCHER_FILES = sorted((REPO / "cluster").glob("*.yaml"))
IDS = [p.name for p in LAUNCHER_FILES]


def raw(path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def header(path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return " ".join(lines)


def worker_types(cfg: dict) -> dict[str, dict]:
    head = cfg["head_node_type"]
    return {k: v for k, v in cfg["available_node_types"].items() if k != head}


def test_there_is_one_launcher_file_per_cloud():
    assert {p.name for p in LAUNCHER_FILES} == {"aws.yaml", "gcp.yaml"}


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=IDS)
def test_ray_validates_it(path):
    prepared = check_launcher_config(path)
    # Ray's prepare_config ran: provider defaults merged, per-type limits filled in.
    assert prepared["cluster_synced_files"] == []
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=IDS)
def test_head_runs_no_trials_and_workers_scale_from_zero(path):
    cfg = raw(path)
    for key in ("max_workers", "upscaling_speed", "idle_timeout_minutes"):
        assert key in cfg, key
    node_types = cfg["available_node_types"]
    assert node_types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    workers = worker_types(cfg)
    assert workers
    for name, node in workers.items():
        assert node["min_workers"] == 0, name
        assert node["max_workers"] >= 1, name
        assert node["resources"]["CPU"] >= 1, name
    gpu = [n for n in workers.values() if n["resources"].get("GPU", 0) >= 1]
    cpu = [n for n in workers.values() if "GPU" not in n["resources"]]
    assert len(gpu) == 1
    assert len(cpu) == 1
    assert sum(n["max_workers"] for n in workers.values()) >= cfg["max_workers"] > 0


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=IDS)
def test_stock_ray_image_at_the_pinned_version(path, ray_version):
    cfg = raw(path)
    images = re.findall(r"rayproject/ray:(\S+)", path.read_text())
    assert images
    for tag in images:
        assert tag.startswith(f"{ray_version}-"), tag
    assert cfg["docker"]["image"] == f"rayproject/ray:{ray_version}-py311-cpu"
    for node in worker_types(cfg).values():
        image = node.get("docker", {}).get("worker_image", cfg["docker"]["image"])
        kind = "gpu" if "GPU" in node["resources"] else "cpu"
        assert image == f"rayproject/ray:{ray_version}-py311-{kind}"


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=IDS)
def test_nodes_get_the_pinned_dependencies_not_the_package(path):
    cfg = raw(path)
    install = "bash ~/robustmsa-deps/cluster/install_node.sh {} ~/robustmsa-deps"
    assert cfg["file_mounts"]["~/robustmsa-deps"] == "."
    assert cfg["head_setup_commands"] == [install.format("cpu")]
    assert cfg["worker_setup_commands"] == [install.format("cpu")]
    for node in worker_types(cfg).values():
        if "GPU" in node["resources"]:
            assert node["worker_setup_commands"] == [install.format("gpu")]
    commands = " ".join(c for key, value in cfg.items() if key.endswith("_commands") for c in value)
    assert "pip install" not in commands  # only through install_node.sh
    script = (REPO / "cluster" / "install_node.sh").read_text()
    assert '["project"]["dependencies"]' in script
    assert '-c "$constraints"' in script
    assert "https://download.pytorch.org/whl/cpu" in script
    assert not re.search(r"pip[^\n]* install[^\n]* (-e|\.)( |$)", script, re.M)


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=IDS)
def test_token_auth_and_mlflow_in_the_node_environment(path):
    cfg = raw(path)
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    head_start = " ".join(cfg["head_start_ray_commands"])
    worker_start = " ".join(cfg["worker_start_ray_commands"])
    assert "export RAY_AUTH_MODE=token MLFLOW_TRACKING_URI=http://127.0.0.1:5000;" in head_start
    assert "export RAY_AUTH_MODE=token MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000;" in (
        worker_start
    )
    assert "cluster/start_mlflow.sh" in head_start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start


@pytest.mark.parametrize("path", LAUNCHER_FILES, ids=IDS)
def test_header_names_the_commands(path):
    text = header(path)
    name = f"cluster/{path.name}"
    for command in (
        f"ray up {name}",
        f"ray dashboard {name}",
        "RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir .",
        "python studies/qa_moe_search.py",
        "study.storage_path=",
        "data.path=",
        f"ray down {name}",
        f"robustmsa cluster check {name}",
    ):
        assert command in text, command
