"""What one trial of a study holds, what the cluster can hold, and how many trials run at once.

A trial is a Tune function trial. Trained in its own process (``training.backend`` resolving to
``in_process``), it holds one worker's share: ``study.cpus_per_trial`` CPUs and
``study.gpus_per_trial`` GPUs (a fraction packs several trials onto one GPU). Trained through a
``TorchTrainer``, the trial process holds one CPU and each of its ``training.num_workers`` Ray
Train workers holds a worker's share. A trial's finishing task (its validation spectrum, its test
evaluation, `robustmsa.search.trial.TrialRunFinisher`) holds one worker's share as well, and
evaluates on the GPU when that share has one.

``study.max_concurrent: auto`` divides what the cluster can hold by one trial's footprint. What
the cluster can hold is the larger of what its nodes offer now and the ceiling its autoscaler
may grow to. Ray 2.60 has no one place that says so for every autoscaler, so the ceiling is,
in this order: the cluster config an autoscaler reports to the GCS (what Ray Data reads too);
the environment variable ``ROBUSTMSA_AUTOSCALER_MAX_RESOURCES`` on the head (a JSON mapping such
as ``{"CPU": 96, "GPU": 4}``; the KubeRay manifests of ``cluster/kuberay`` set it to what their
worker groups add up to, and a test keeps the two equal); the cluster launcher's config that
``ray up`` leaves on the head (``~/ray_bootstrap_config.yaml``, which the launcher's head start
command hands to the autoscaler). A job's driver runs on the head, so it sees both.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from robustmsa.config import StudyConfig
from robustmsa.errors import ConfigError
from robustmsa.training.trainer import gpus_per_worker

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")
MAX_RESOURCES_ENV = "ROBUSTMSA_AUTOSCALER_MAX_RESOURCES"


@dataclass(frozen=True)
class TrialResources:
    """``trial``: the Tune trial's bundle (``tune.with_resources`` keys ``cpu``/``gpu``);
    ``worker``: one training worker's share (Ray resource names ``CPU``/``GPU``), also what a
    finishing task holds; ``num_workers``: Ray Train workers per trial (0: trained in the trial
    process)."""

    trial: dict[str, float]
    worker: dict[str, float]
    num_workers: int

    def footprint(self) -> dict[str, float]:
        """Everything one running trial holds, in Ray resource names."""
        total = {"CPU": self.trial.get("cpu", 0.0), "GPU": self.trial.get("gpu", 0.0)}
        for name, amount in self.worker.items():
            total[name] = total.get(name, 0.0) + self.num_workers * amount
        return {k: v for k, v in total.items() if v > 0}

    @property
    def finishing(self) -> dict[str, float]:
        """A finishing task's share, in the ``cpu``/``gpu`` keys of `TrialRunFinisher`."""
        return {"cpu": self.worker.get("CPU", 1.0), "gpu": self.worker.get("GPU", 0.0)}


def trial_resources(config: StudyConfig, in_process: bool) -> TrialResources:
    """The resources of one trial of ``config`` (module docstring)."""
    worker = {"CPU": float(config.study.cpus_per_trial)}
    gpus = gpus_per_worker(config)
    if gpus:
        worker["GPU"] = gpus
    if in_process:
        trial = {"cpu": worker["CPU"]}
        if gpus:
            trial["gpu"] = gpus
        return TrialResources(trial, worker, 0)
    return TrialResources({"cpu": 1.0}, worker, config.training.num_workers)


def _node_type_ceiling(
    node_types: dict[str, Any], head_type: str | None, max_workers: int | None
) -> dict[str, float]:
    """Resources of a launcher config's node types at their ``max_workers`` (the head at one),
    each worker type capped by the cluster-wide ``max_workers``."""
    total: dict[str, float] = {}
    for name, node_type in node_types.items():
        count = node_type.get("max_workers", 0)
        if max_workers is not None:
            count = min(count, max_workers)
        if name == head_type:
            count = 1
        for resource, amount in (node_type.get("resources") or {}).items():
            total[resource] = total.get(resource, 0.0) + count * float(amount)
    return total


def launcher_ceiling(path: Path) -> dict[str, float] | None:
    """The resources of the cluster launcher config at ``path`` with every node type at its
    ``max_workers``; None when the file is absent or names no node types."""
    path = path.expanduser()
    if not path.is_file():
        return None
    launcher = yaml.safe_load(path.read_text()) or {}
    node_types = launcher.get("available_node_types")
    if not isinstance(node_types, dict):
        return None
    return _node_type_ceiling(
        node_types, launcher.get("head_node_type"), launcher.get("max_workers")
    )


def autoscaler_ceiling(bootstrap: Path = BOOTSTRAP_CONFIG) -> dict[str, float] | None:
    """The resources the connected cluster's autoscaler may grow to, or None when no autoscaler
    says (module docstring). Needs ``ray.init`` first."""
    import ray._private.state

    reported = ray._private.state.state.get_max_resources_from_cluster_config()
    if reported:
        return {k: float(v) for k, v in reported.items()}
    declared = declared_ceiling()
    if declared is not None:
        return declared
    return launcher_ceiling(bootstrap)


def declared_ceiling(environ: Mapping[str, str] = os.environ) -> dict[str, float] | None:
    """``$ROBUSTMSA_AUTOSCALER_MAX_RESOURCES`` as ``{resource: amount}``, or None when unset;
    `ConfigError` naming the variable when it is not a JSON mapping of numbers."""
    text = environ.get(MAX_RESOURCES_ENV)
    if not text:
        return None
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not a mapping")
        return {str(k): float(v) for k, v in raw.items() if not isinstance(v, bool)}
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f'{MAX_RESOURCES_ENV}: expected a JSON mapping such as {{"CPU": 96, "GPU": 4}}, '
            f"got {text!r} ({exc})"
        ) from exc


def cluster_capacity() -> dict[str, float]:
    """What the connected cluster can hold: per resource, the larger of its nodes' totals now
    and its autoscaler's ceiling."""
    import ray

    capacity = {k: float(v) for k, v in ray.cluster_resources().items()}
    for name, amount in (autoscaler_ceiling() or {}).items():
        capacity[name] = max(capacity.get(name, 0.0), amount)
    return capacity


def concurrent_trials(footprint: dict[str, float], capacity: dict[str, float]) -> int:
    """How many trials of ``footprint`` fit into ``capacity`` at once (at least 1)."""
    fits = [math.floor(capacity.get(k, 0.0) / v + 1e-9) for k, v in footprint.items() if v > 0]
    return max(1, min(fits)) if fits else 1


def check_fits(footprint: dict[str, float], capacity: dict[str, float]) -> None:
    """Raise `ConfigError` when not even one trial can ever be scheduled (Ray would wait
    forever): naming the resource, what a trial asks and what the cluster offers."""
    for name, amount in sorted(footprint.items()):
        offered = capacity.get(name, 0.0)
        if amount > offered + 1e-9:
            key = "study.gpus_per_trial" if name == "GPU" else "study.cpus_per_trial"
            where = "has no GPUs" if name == "GPU" and not offered else f"offers {offered:g}"
            raise ConfigError(
                f"{key}: a trial needs {amount:g} {name}, but the cluster {where} now and its "
                "autoscaler can add no more (training.num_workers, training.use_gpu and "
                f"study.cpus_per_trial / gpus_per_trial set the footprint {footprint})"
            )


def resolve_max_concurrent(
    config: StudyConfig, resources: TrialResources, capacity: dict[str, float], trials: int
) -> int:
    """``study.max_concurrent`` as a number: ``auto`` fits the cluster, never more than the
    ``trials`` the study trains (`StudyKind.trial_count`); raises `ConfigError` when no trial
    fits at all."""
    footprint = resources.footprint()
    check_fits(footprint, capacity)
    wanted = config.study.max_concurrent
    if wanted != "auto":
        return int(wanted)
    return min(concurrent_trials(footprint, capacity), trials)
