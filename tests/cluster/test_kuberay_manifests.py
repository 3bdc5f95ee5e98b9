"""The KubeRay manifests of ``cluster/kuberay``: valid against the CRD schemas of the KubeRay
release they target (unknown fields rejected), and keeping the project's contract (autoscaler v2,
a head without trials, CPU and GPU groups from 0, the pinned Ray version everywhere, token auth,
the code shipped per job, the same cluster for the RayCluster and the RayJob)."""

from __future__ import annotations

import re

import pytest
import yaml
from paths import REPO
from robustmsa.cluster import check_kuberay_manifest

KUBERAY = REPO / "cluster" / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))


def load(name: str) -> dict:
    with open(KUBERAY / name) as f:
        return yaml.safe_load(f)


def groups(spec: dict) -> dict[str, dict]:
    return {g["groupName"]: g for g in spec["workerGroupSpecs"]}


def containers(spec: dict) -> list[dict]:
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for p in pods for c in p["template"]["spec"]["containers"]]


def test_the_manifests_are_a_raycluster_and_a_rayjob():
    assert [p.name for p in MANIFESTS] == ["raycluster.yaml", "rayjob.yaml"]
    assert load("raycluster.yaml")["kind"] == "RayCluster"
    assert load("rayjob.yaml")["kind"] == "RayJob"


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_valid_against_the_kuberay_crd_schema(path, crd_schemas):
    check_kuberay_manifest(path, crd_schemas)


def test_schemas_come_from_the_named_release(crd_dir, crd_schemas, kuberay_version):
    assert sorted(crd_schemas) == [("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob")]
    source = (crd_dir / "SOURCE.md").read_text()
    assert "https://github.com/ray-project/kuberay" in source
    assert f"`v{kuberay_version}`" in source
    assert re.search(r"commit `[0-9a-f]{40}`", source)
    for path in crd_dir.iterdir():  # only what is needed, each small
        assert path.stat().st_size < 300_000, path


def test_cluster_spec(ray_version):
    spec = load("raycluster.yaml")["spec"]
    assert spec["rayVersion"] == ray_version
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    # KubeRay 1.7 rejects the env var together with autoscalerOptions.version.
    head_env = {e["name"] for c in head["template"]["spec"]["containers"] for e in c.get("env", [])}
    assert "RAY_enable_autoscaler_v2" not in head_env
    workers = groups(spec)
    assert set(workers) == {"cpu", "gpu"}
    for name, group in workers.items():
        assert group["minReplicas"] == 0, name
        assert group["replicas"] == 0, name
        assert group["maxReplicas"] >= 1, name
    gpu_limits = workers["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(gpu_limits["nvidia.com/gpu"]) >= 1
    cpu_limits = workers["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in cpu_limits
    for c in containers(spec):
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env.get("MLFLOW_TRACKING_URI"), c["name"]


def test_images_are_the_project_image_at_the_pinned_version(ray_version):
    spec = load("raycluster.yaml")["spec"]
    head_image = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert head_image.endswith(f"/robustmsa-ray:{ray_version}-py311-cpu")
    for name, group in groups(spec).items():
        image = group["template"]["spec"]["containers"][0]["image"]
        assert image.endswith(f"/robustmsa-ray:{ray_version}-py311-{name}"), image
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={ray_version}\n" in dockerfile
    assert "FROM rayproject/ray:${RAY_VERSION}-py311-${KIND}" in dockerfile
    assert 'install_node.sh "${KIND}"' in dockerfile


def test_rayjob_runs_the_search_study_on_the_same_cluster():
    job = load("rayjob.yaml")["spec"]
    assert job["rayClusterSpec"] == load("raycluster.yaml")["spec"]
    assert job["entrypoint"].startswith("python studies/qa_moe_search.py")
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0
    env = yaml.safe_load(job["runtimeEnvYAML"])
    assert re.fullmatch(r"(s3|gs)://\S+\.zip", env["working_dir"])
    assert env["env_vars"]["MLFLOW_TRACKING_URI"]
    # The driver adds py_modules itself: the same field in the job's env makes Ray refuse it.
    assert "py_modules" not in env
    for key in ("study.storage_path=", "data.path="):
        assert key in job["entrypoint"]


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_header_names_the_commands_and_versions(path, ray_version, kuberay_version):
    text = path.read_text().split("\napiVersion:")[0]
    assert f"KubeRay {kuberay_version}" in text
    assert f"Ray {ray_version}" in text
    assert f"kubectl apply -f cluster/kuberay/{path.name}" in text
    assert f"robustmsa cluster check cluster/kuberay/{path.name} --crd-dir" in text
    assert "python studies/qa_moe_search.py" in text


def test_the_heads_declared_ceiling_is_what_the_worker_groups_add_up_to():
    """``study.max_concurrent: auto`` reads the ceiling from the head's environment on KubeRay
    (robustmsa.search.resources): it must match the worker groups at maxReplicas."""
    from robustmsa.search.resources import MAX_RESOURCES_ENV, declared_ceiling

    spec = load("raycluster.yaml")["spec"]
    expected: dict[str, float] = {}
    for group in groups(spec).values():
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        per_pod = {"CPU": float(limits["cpu"]), "GPU": float(limits.get("nvidia.com/gpu", 0))}
        for name, amount in per_pod.items():
            expected[name] = expected.get(name, 0.0) + group["maxReplicas"] * amount
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in head.get("env", [])}
    assert declared_ceiling(env) == {k: v for k, v in expected.items() if v}
    assert MAX_RESOURCES_ENV in env
