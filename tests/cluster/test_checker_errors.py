"""Bad cluster files fail with one line naming the file and the key: the checker's errors, the
unknown-field walk, and ``robustmsa cluster check`` (exit status 2). The bad files are the
project's own files with one defect each, so the tests follow the files as they change."""

from __future__ import annotations

import subprocess
import sys

import pytest
from paths import REPO
from robustmsa.cli import main
from robustmsa.cluster import check_kuberay_manifest, check_launcher_config
from robustmsa.cluster.unknown_fields import find_unknown_field
from robustmsa.errors import ConfigError

AWS = REPO / "cluster" / "aws.yaml"
RAYCLUSTER = REPO / "cluster" / "kuberay" / "raycluster.yaml"
RAYJOB = REPO / "cluster" / "kuberay" / "rayjob.yaml"
# The GPU group's minReplicas misspelt: the API server would prune it and apply the default.
MIN_REPLICA_TYPO = (
    "      minReplicas: 0\n      maxReplicas: 4",
    "      minReplica: 0\n      maxReplicas: 4",
)


def variant(tmp_path, source, old, new, name="bad.yaml", count=1):
    text = source.read_text()
    assert old in text, f"{old!r} not in {source}"
    path = tmp_path / name
    path.write_text(text.replace(old, new, count))
    return path


def one_line_error(check, *args) -> str:
    with pytest.raises(ConfigError) as caught:
        check(*args)
    message = str(caught.value)
    assert "\n" not in message, message
    assert len(message) < 250, message
    return message


# -- cluster launcher -----------------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path):
    bad = variant(
        tmp_path, AWS, "cluster_name: robustmsa\n", "cluster_name: robustmsa\nmax_worker: 3\n"
    )
    message = one_line_error(check_launcher_config, bad)
    assert message == f"{bad}: max_worker: unknown key"


def test_unknown_key_in_a_node_type(tmp_path):
    bad = variant(tmp_path, AWS, "    max_workers: 4\n", "    max_worker: 4\n")
    message = one_line_error(check_launcher_config, bad)
    assert message == f"{bad}: available_node_types.gpu_worker.max_worker: unknown key"


def test_node_type_without_resources(tmp_path):
    bad = variant(tmp_path, AWS, "    resources: {CPU: 16}\n", "")
    message = one_line_error(check_launcher_config, bad)
    assert message.startswith(f"{bad}: available_node_types.cpu_worker")
    assert "resources" in message


def test_node_type_with_empty_resources(tmp_path):
    bad = variant(tmp_path, AWS, "resources: {CPU: 16}", "resources: {}")
    message = one_line_error(check_launcher_config, bad)
    assert message.startswith(f"{bad}: available_node_types.cpu_worker.resources: ")
    assert "node type 'cpu_worker' declares no resources" in message


def test_head_with_cpus(tmp_path):
    bad = variant(tmp_path, AWS, "resources: {CPU: 0}", "resources: {CPU: 4}")
    message = one_line_error(check_launcher_config, bad)
    assert message.startswith(f"{bad}: available_node_types.head.resources.CPU: ")
    assert "must be 0, got 4" in message


def test_fractional_gpu_in_a_node_type(tmp_path):
    bad = variant(tmp_path, AWS, "resources: {CPU: 8, GPU: 1}", "resources: {CPU: 8, GPU: 0.5}")
    message = one_line_error(check_launcher_config, bad)
    assert message == (
        f"{bad}: available_node_types.gpu_worker.resources.GPU: expected integer, got float 0.5"
    )


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("cluster_name: [robustmsa\n")
    assert one_line_error(check_launcher_config, bad).startswith(f"{bad}: malformed YAML at line")


# -- KubeRay --------------------------------------------------------------------------------------


def test_unknown_field_in_a_worker_group(tmp_path, crd_schemas):
    bad = variant(tmp_path, RAYCLUSTER, *MIN_REPLICA_TYPO)
    message = one_line_error(check_kuberay_manifest, bad, crd_schemas)
    assert message.startswith(f"{bad}: spec.workerGroupSpecs[1].minReplica: unknown field")


def test_unknown_field_deep_in_a_rayjob_pod_template(tmp_path, crd_schemas):
    bad = variant(
        tmp_path,
        RAYJOB,
        "            serviceAccountName: robustmsa\n",
        "            serviceAccount_Name: robustmsa\n",
    )
    message = one_line_error(check_kuberay_manifest, bad, crd_schemas)
    assert message.startswith(
        f"{bad}: spec.rayClusterSpec.workerGroupSpecs[0].template.spec.serviceAccount_Name: "
        "unknown field"
    )


def test_wrong_type_and_enum(tmp_path, crd_schemas):
    bad = variant(tmp_path, RAYCLUSTER, "maxReplicas: 8", "maxReplicas: eight")
    message = one_line_error(check_kuberay_manifest, bad, crd_schemas)
    assert (
        message
        == f"{bad}: spec.workerGroupSpecs[0].maxReplicas: expected integer, got string 'eight'"
    )
    bad = variant(tmp_path, RAYCLUSTER, "version: v2 ", "version: v3 ", name="enum.yaml")
    message = one_line_error(check_kuberay_manifest, bad, crd_schemas)
    assert message == f"{bad}: spec.autoscalerOptions.version: must be one of v1, v2, got 'v3'"


def test_malformed_runtime_env_yaml(tmp_path, crd_schemas):
    bad = variant(tmp_path, RAYJOB, "    working_dir: s3://", "    working_dir: [s3://")
    message = one_line_error(check_kuberay_manifest, bad, crd_schemas)
    assert message.startswith(f"{bad}: spec.runtimeEnvYAML: malformed YAML")


def test_kind_without_schema(tmp_path, crd_schemas):
    bad = variant(tmp_path, RAYCLUSTER, "kind: RayCluster", "kind: RayService")
    message = one_line_error(check_kuberay_manifest, bad, crd_schemas)
    assert message.startswith(f"{bad}: kind RayService of apiVersion ray.io/v1: no CRD schema")


def test_unknown_field_walk():
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "spec": {
                "type": "object",
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                    },
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "nested": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {"size": {"type": "integer"}},
                        },
                    },
                },
            },
        },
    }
    good = {
        "apiVersion": "x/v1",
        "metadata": {"name": "n", "labels": {"a": "b"}},
        "spec": {
            "groups": [{"name": "a"}, {"name": "b"}],
            "labels": {"any.key/x": "v"},
            "free": {"anything": {"goes": 1}},
            "nested": {"k": {"size": 1}},
        },
    }
    assert find_unknown_field(good, schema) is None
    assert find_unknown_field({"spec": {"groups": [{}, {"nam": "b"}]}}, schema) == (
        "spec.groups[1].nam"
    )
    assert find_unknown_field({"spec": {"nested": {"k": {"sise": 1}}}}, schema) == (
        "spec.nested.k.sise"
    )
    assert find_unknown_field({"metadata": {"nmae": "x"}}, schema) == "metadata.nmae"
    assert find_unknown_field({"status": {}}, schema) == "status"


# -- command line ---------------------------------------------------------------------------------


def test_cli_checks_every_file_of_the_repository(capsys, crd_dir):
    files = [str(p) for p in sorted((REPO / "cluster").rglob("*.yaml"))]
    assert len(files) == 4
    assert main(["cluster", "check", *files, "--crd-dir", str(crd_dir)]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"ok {f}" for f in files]
    assert out.err == ""


def test_cli_manifest_needs_the_crd_dir(capsys):
    assert main(["cluster", "check", str(RAYCLUSTER)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"robustmsa: error: {RAYCLUSTER}: a Kubernetes manifest: give the KubeRay "
                   "CRD schemas with --crd-dir DIR"]  # fmt: skip


def test_cli_bad_file_exits_2_with_one_line(tmp_path, crd_dir):
    bad = variant(tmp_path, RAYCLUSTER, *MIN_REPLICA_TYPO)
    proc = subprocess.run(
        [sys.executable, "-m", "robustmsa.cli", "cluster", "check", str(bad), str(AWS),
         "--crd-dir", str(crd_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"robustmsa: error: {bad}: spec.workerGroupSpecs[1].minReplica: unknown field "
        "(not in the RayCluster CRD schema)"
    ]
    assert proc.stdout.splitlines() == [f"ok {AWS}"]
