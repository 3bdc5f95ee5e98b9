"""Offline checks of the files that start robustmsa clusters (``cluster/`` in the repository).

- :func:`check_launcher_config`: a Ray cluster-launcher YAML (``ray up``), through Ray's own
  validation plus the project's rules (every node type declares its resources; the head runs no
  trials).
- :func:`check_kuberay_manifest`: a KubeRay RayCluster or RayJob manifest, against the CRD's
  OpenAPI schema, rejecting unknown fields as ``kubectl apply --validate=strict`` does.
- :func:`check_file`: either, chosen by the file's content (``robustmsa cluster check``).

Every problem is a :class:`robustmsa.errors.ConfigError` whose one-line message starts with the
file and names the key at fault. Nothing here contacts a cloud or a Kubernetes API server.
"""

from robustmsa.cluster.check import check_file
from robustmsa.cluster.kuberay import check_kuberay_manifest, load_crd_schemas
from robustmsa.cluster.launcher import check_launcher_config

__all__ = ["check_file", "check_kuberay_manifest", "check_launcher_config", "load_crd_schemas"]
