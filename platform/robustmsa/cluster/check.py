"""``robustmsa cluster check``: one file, whichever kind of cluster file it is.

A YAML whose (first) document has ``apiVersion`` and ``kind`` is a Kubernetes manifest and is
checked by :func:`robustmsa.cluster.kuberay.check_kuberay_manifest` (which needs the CRD
schemas); any other YAML is a Ray cluster-launcher config, checked by
:func:`robustmsa.cluster.launcher.check_launcher_config`.
"""

from __future__ import annotations

from pathlib import Path

from robustmsa.cluster.files import load_yaml_documents
from robustmsa.cluster.kuberay import CrdSchemas, check_kuberay_manifest
from robustmsa.cluster.launcher import check_launcher_config
from robustmsa.errors import ConfigError


def is_kubernetes_manifest(path: Path) -> bool:
    docs = load_yaml_documents(path)
    return bool(docs) and isinstance(docs[0], dict) and {"apiVersion", "kind"} <= set(docs[0])


def check_file(path: str | Path, crd_schemas: CrdSchemas | None = None) -> str:
    """Check ``path``; return what it was checked as (``Ray cluster launcher config`` or
    ``KubeRay manifest``). Raises ``ConfigError`` (one line naming the file and key)."""
    path = Path(path)
    if is_kubernetes_manifest(path):
        if crd_schemas is None:
            raise ConfigError(
                f"{path}: a Kubernetes manifest: give the KubeRay CRD schemas with --crd-dir DIR"
            )
        check_kuberay_manifest(path, crd_schemas)
        return "KubeRay manifest"
    check_launcher_config(path)
    return "Ray cluster launcher config"
