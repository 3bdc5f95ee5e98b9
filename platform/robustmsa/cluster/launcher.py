"""Offline check of a Ray cluster-launcher YAML (the file ``ray up`` reads).

What is checked, in order:

1. The file is one YAML mapping with a ``provider`` mapping naming its ``type``, and it names its
   own ``available_node_types`` and ``head_node_type`` (Ray would otherwise fill in its provider
   defaults, whose node types leave their resources to be guessed at launch).
2. Ray's own validation, exactly as ``ray up`` runs it: ``prepare_config`` (merge with the
   provider's defaults, per-node-type worker limits) then ``validate_config`` (Ray's JSON schema
   ``ray/autoscaler/ray-schema.json``: unknown keys, types, required keys; ``head_node_type``
   among the node types; the sum of ``min_workers`` within ``max_workers``). Its errors come back
   as one line naming the key.
3. The project's rules: every node type declares ``resources`` with its ``CPU`` count (and
   ``GPU``, where it has GPUs) so the autoscaler can plan before a node exists, and the head's
   ``CPU`` is 0 so no trial ever runs on it.

``prepare_config`` and ``validate_config`` are private Ray APIs; the project pins Ray
(``ray==2.60.0``), and the tests run them on every launcher YAML of ``cluster/``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from robustmsa.cluster.files import join_path, load_yaml_documents
from robustmsa.cluster.schema_errors import condense, short
from robustmsa.errors import ConfigError

NODE_TYPES = "available_node_types"


def check_launcher_config(path: str | Path) -> dict:
    """Validate the launcher YAML at ``path``; return the config as Ray prepared it (provider
    defaults merged in, per-node-type ``min_workers``/``max_workers`` filled). Raises
    ``ConfigError`` with a one-line message ``PATH: key: problem``."""
    path = Path(path)
    docs = load_yaml_documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ConfigError(f"{path}: expected one YAML mapping (a Ray cluster config)")
    raw = docs[0]
    _check_shape(raw, path)
    prepared = _ray_validation(raw, path)
    _check_node_resources(raw, path)
    return prepared


def _check_shape(cfg: dict, path: Path) -> None:
    provider = cfg.get("provider")
    if not isinstance(provider, dict) or not isinstance(provider.get("type"), str):
        raise ConfigError(f"{path}: provider.type: missing (e.g. aws, gcp)")
    for key in (NODE_TYPES, "head_node_type"):
        if key not in cfg:
            raise ConfigError(
                f"{path}: {key}: missing (the project's cluster files name their node types)"
            )
    node_types = cfg[NODE_TYPES]
    if not isinstance(node_types, dict) or not node_types:
        raise ConfigError(f"{path}: {NODE_TYPES}: expected a mapping of node types")
    for name, node in node_types.items():
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {join_path(NODE_TYPES, name)}: expected a mapping")


def _ray_validation(cfg: dict, path: Path) -> dict:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    # prepare_config logs each default it fills in ("setting max workers for ..."): not news.
    ray_log = logging.getLogger("ray.autoscaler._private.util")
    level = ray_log.level
    ray_log.setLevel(logging.WARNING)
    try:
        prepared = prepare_config(copy.deepcopy(cfg))
        validate_config(prepared)
    except jsonschema.ValidationError as exc:
        raise ConfigError(f"{path}: {condense(exc)}") from None
    except NotImplementedError as exc:  # an unknown provider type
        raise ConfigError(f"{path}: provider.type: {exc}") from None
    except (ValueError, KeyError, TypeError, AssertionError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path}: rejected by Ray's cluster config validation: {first}") from None
    finally:
        ray_log.setLevel(level)
    return prepared


def _check_node_resources(cfg: dict, path: Path) -> None:
    head = cfg["head_node_type"]
    for name, node in cfg[NODE_TYPES].items():
        where = join_path(NODE_TYPES, name)
        resources = node.get("resources")
        if not resources:
            raise ConfigError(
                f"{path}: {where}.resources: node type {name!r} declares no resources "
                "(declare CPU, and GPU where it has GPUs)"
            )
        if "CPU" not in resources:
            raise ConfigError(f"{path}: {where}.resources.CPU: node type {name!r} declares no CPU")
        if name == head and resources["CPU"] != 0:
            raise ConfigError(
                f"{path}: {where}.resources.CPU: the head node type runs no trials, "
                f"so its CPU must be 0, got {short(resources['CPU'])}"
            )
