"""MLflow runs of a study: one parent run per search, one nested child run per trial.

Nesting uses the standard ``mlflow.parentRunId`` tag, so the MLflow UI groups trials under
their study. Metrics and params always go out in batches (`log_batch`), never one request each.
Every run this module starts is ended by the code that started it or, for trials that Tune
stops from outside, by `end_dangling_runs` on the driver.
"""

from __future__ import annotations

import http.client
import math
import numbers
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from robustmsa.errors import RobustMSAError

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000
TRIAL_TAG = "robustmsa.trial_id"
STUDY_TAG = "robustmsa.study"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag of a nested run
# MLflow's experiment kind (the UI's ExperimentKind enum, MLflow 3.17): a study trains models,
# it is not a GenAI app. Set on every study experiment, new or found without it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def resolve_tracking_uri(configured: str | None, root: Path) -> str:
    """``configured``, else ``MLFLOW_TRACKING_URI``, else the embedded sqlite store in ``root``."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(root / 'mlruns.db').resolve()}"


# MLflow's tracking store schemes (MLflow 3.17), with the http(s) of a tracking server.
TRACKING_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql",
                    "databricks", "databricks-uc", "uc")  # fmt: skip
SQLITE_HEADER = b"SQLite format 3\x00"


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any run exists, with one line naming ``uri``: a scheme MLflow has no
    store for, a sqlite store whose file is not an SQLite database or whose folder does not
    exist, or an HTTP tracking server that does not answer its ``/health``."""
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme and scheme.split("+", 1)[0] not in TRACKING_SCHEMES:
        raise RobustMSAError(
            f"MLflow tracking URI {uri}: unknown scheme {scheme!r} (known: "
            f"{', '.join(TRACKING_SCHEMES)})"
        )
    if scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        if path is not None and str(path) not in ("", ":memory:"):
            if path.is_dir() or (path.exists() and not _is_sqlite(path)):
                raise RobustMSAError(f"MLflow tracking URI {uri}: {path} is not an SQLite database")
            if not path.exists() and not path.parent.is_dir():
                raise RobustMSAError(
                    f"MLflow tracking URI {uri}: folder {path.parent} does not exist"
                )
    if scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
            if resp.status == 200:
                return
            problem = f"HTTP {resp.status}"
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        # ValueError / InvalidURL: a malformed URI; HTTPException: not an HTTP server.
        problem = str(getattr(exc, "reason", exc)) or type(exc).__name__
    # One line, whatever the port's owner answered (another protocol's greeting has newlines).
    problem = (
        " ".join(repr(problem)[1:-1].split()) if "\n" in problem or "\r" in problem else problem
    )
    raise RobustMSAError(f"MLflow tracking URI {uri}: unreachable ({problem})")


def _is_sqlite(path: Path) -> bool:
    """An empty file is one too: sqlite makes a database of it."""
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    return head in (b"", SQLITE_HEADER)


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """The id of experiment ``name``, created (with ``artifact_root`` for local stores) if new,
    of MLflow's model-training kind (`EXPERIMENT_KIND_TAG`), also when found without it."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND_TAG not in found.tags:  # an experiment kind someone chose stays
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return found.experiment_id
    location = None
    if artifact_root is not None:
        location = (artifact_root / name).resolve().as_uri()
    return client.create_experiment(
        name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
    )


def runs_view_url(base_url: str, experiment_id: str) -> str:
    """The MLflow UI's page of the experiment's runs, in its machine-learning view.

    MLflow 3.17's UI shows what its workflow type says: the ``workflowType`` query parameter,
    else the browser's last choice, GenAI in a fresh browser. The experiment's kind tag does
    not change that: a fresh browser sent to ``#/experiments/<id>`` of a tagged experiment
    lands on the GenAI overview (tests/integration/test_mlflow_ui.py)."""
    base = base_url.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in sorted(params.items())]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])


def log_metrics(
    client: MlflowClient, run_id: str, metrics: Iterable[tuple[str, float, int]]
) -> None:
    """Log ``(key, value, step)`` triples in as few requests as MLflow allows."""
    now = int(time.time() * 1000)
    items = [
        Metric(k, float(v), now, int(s))
        for k, v, s in metrics
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    ]
    for i in range(0, len(items), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=items[i : i + MAX_METRICS_PER_BATCH])


def start_run(
    client: MlflowClient,
    experiment_id: str,
    name: str,
    *,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """A new RUNNING run; nested under ``parent_run_id`` when given."""
    all_tags = dict(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    return run.info.run_id


def end_dangling_runs(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    status: str = "KILLED",
    tags: dict[str, str] | None = None,
) -> int:
    """End every child of ``parent_run_id`` still RUNNING with ``status`` (and ``tags``, such
    as an interrupted study's outcome); returns how many."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and status = 'RUNNING'",
        max_results=10000,
    )
    for run in runs:
        set_tags(client, run.info.run_id, {"robustmsa.ended_by": "study driver", **(tags or {})})
        client.set_terminated(run.info.run_id, status)
    return len(runs)


class MlflowEpochSink:
    """A picklable per-epoch metric logger for one run (sent to trial and Train worker processes).

    ``metrics`` keys such as ``train/loss`` and ``val/mae`` are logged with ``step = epoch``.
    ``skip_through``: epochs up to this one are already in the run (a restarted trial
    re-trains the epochs after its last checkpoint, some of which it may have logged before it
    stopped): they are not logged twice.
    """

    def __init__(self, tracking_uri: str, run_id: str, skip_through: int = -1):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.skip_through = skip_through

    def __call__(self, metrics: dict, step: int) -> None:
        from robustmsa.tracking.spool import SpoolingClient

        if step <= self.skip_through:
            return
        client = SpoolingClient(self.tracking_uri)
        log_metrics(client, self.run_id, ((k, v, step) for k, v in metrics.items()))


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
