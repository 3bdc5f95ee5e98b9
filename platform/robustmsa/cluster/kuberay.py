"""Offline check of KubeRay manifests (RayCluster, RayJob) against the CRDs' OpenAPI schemas.

For every document of the file, the schema of its ``apiVersion`` and ``kind`` is looked up in
the CRD schemas given (see :func:`load_crd_schemas`), then:

1. unknown fields are rejected, as ``kubectl apply --validate=strict`` does (the API server itself
   would silently prune them): see :mod:`robustmsa.cluster.unknown_fields`;
2. the document is validated against the schema with jsonschema: types, enums, required fields,
   patterns (OpenAPI's ``nullable`` honoured; ``format`` and the CEL rules of
   ``x-kubernetes-validations`` are not evaluated: only the API server can);
3. a RayJob's ``spec.runtimeEnvYAML`` must parse as a YAML mapping (KubeRay parses it only
   when it submits the job).

Problems raise ``ConfigError`` with one line, ``FILE: spec.workerGroupSpecs[1].minReplica:
unknown field``. The operator's own admission rules (for example, minReplicas <= maxReplicas)
are not repeated here.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from robustmsa.cluster.files import load_yaml_documents
from robustmsa.cluster.schema_errors import condense
from robustmsa.cluster.unknown_fields import find_unknown_field
from robustmsa.errors import ConfigError

CrdSchemas = Mapping[tuple[str, str], dict]  # (apiVersion, kind) -> openAPIV3Schema


def load_crd_schemas(directory: str | Path) -> dict[tuple[str, str], dict]:
    """The ``openAPIV3Schema`` of every served CRD version found in ``directory``, keyed by
    ``(apiVersion, kind)``. Reads CRD YAMLs (``kind: CustomResourceDefinition``, as in KubeRay's
    ``ray-operator/config/crd/bases``) and the project's extracted form: ``*.json`` or
    ``*.json.gz`` holding ``{"apiVersion", "kind", "openAPIV3Schema"}``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"--crd-dir {directory}: not a directory")
    schemas: dict[tuple[str, str], dict] = {}
    for path in sorted(directory.iterdir()):
        name = path.name
        if name.endswith((".json", ".json.gz")):
            doc = _read_json(path)
            if isinstance(doc, dict) and {"apiVersion", "kind", "openAPIV3Schema"} <= set(doc):
                schemas[(doc["apiVersion"], doc["kind"])] = doc["openAPIV3Schema"]
        elif name.endswith((".yaml", ".yml")):
            for crd in load_yaml_documents(path):
                if isinstance(crd, dict) and crd.get("kind") == "CustomResourceDefinition":
                    schemas.update(_crd_versions(crd))
    if not schemas:
        raise ConfigError(f"--crd-dir {directory}: no CRD schemas found (*.yaml CRDs or *.json)")
    return schemas


def _read_json(path: Path):
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable CRD schema: {exc}") from None


def _crd_versions(crd: dict) -> dict[tuple[str, str], dict]:
    spec = crd.get("spec", {})
    group, kind = spec.get("group"), spec.get("names", {}).get("kind")
    return {
        (f"{group}/{v['name']}", kind): v["schema"]["openAPIV3Schema"]
        for v in spec.get("versions", [])
        if v.get("served") and "openAPIV3Schema" in v.get("schema", {})
    }


def check_kuberay_manifest(path: str | Path, crd_schema: CrdSchemas | str | Path) -> None:
    """Validate every document of the manifest at ``path``. ``crd_schema``: the schemas from
    :func:`load_crd_schemas`, or the directory to load them from. Raises ``ConfigError``."""
    import jsonschema

    path = Path(path)
    schemas = crd_schema if isinstance(crd_schema, Mapping) else load_crd_schemas(crd_schema)
    docs = load_yaml_documents(path)
    if not docs:
        raise ConfigError(f"{path}: no YAML document in the file")
    for i, doc in enumerate(docs):
        where = f"{path}" if len(docs) == 1 else f"{path} (document {i + 1})"
        if not isinstance(doc, dict):
            raise ConfigError(f"{where}: expected a Kubernetes object (a YAML mapping)")
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        if not api_version or not kind:
            missing = "apiVersion" if not api_version else "kind"
            raise ConfigError(f"{where}: {missing}: missing")
        schema = schemas.get((api_version, kind))
        if schema is None:
            known = ", ".join(f"{a} {k}" for a, k in sorted(schemas))
            raise ConfigError(
                f"{where}: kind {kind} of apiVersion {api_version}: no CRD schema for it "
                f"(have: {known})"
            )
        unknown = find_unknown_field(doc, schema)
        if unknown:
            raise ConfigError(f"{where}: {unknown}: unknown field (not in the {kind} CRD schema)")
        validator = jsonschema.Draft4Validator(_as_json_schema(schema))
        error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
        if error is not None:
            raise ConfigError(f"{where}: {condense(error)}")
        if kind == "RayJob":
            _check_runtime_env_yaml(doc, where)


def _as_json_schema(schema):
    """OpenAPI's ``nullable: true`` as JSON Schema: ``null`` is an allowed value."""
    if isinstance(schema, list):
        return [_as_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _as_json_schema(v) for k, v in schema.items()}
    if out.get("nullable") is True and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    return out


def _check_runtime_env_yaml(doc: dict, where: str) -> None:
    text = doc.get("spec", {}).get("runtimeEnvYAML")
    if text is None:
        return
    try:
        env = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: spec.runtimeEnvYAML: malformed YAML{line}") from None
    if not isinstance(env, dict):
        raise ConfigError(f"{where}: spec.runtimeEnvYAML: expected a YAML mapping")
