"""The store and the study: opening a tracking store (`open_client`, which never creates one),
finding a study's parent run (`find_study`) and its child runs (`study_runs`), and what the
parent says about the study: its kind, searched space, selected trial, reference model and
validation scores.

`find_study` given a run id imports `robustmsa.evaluation.report` (which imports torch) to
look that run up."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from robustmsa.analysis.names import (
    KIND_PARAM,
    OBJECTIVE,
    PARENT_TAG,
    REFERENCE_ROLE,
    REFERENCE_TAG,
    ROLE_TAG,
    SEARCH_METRIC,
    SELECTED_TAG,
    SPACE_PARAM,
    STUDY_TAG,
)
from robustmsa.config import ParamSpace
from robustmsa.errors import RobustMSAError

MAX_RUNS = 10000


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory unless
    absolute, as SQLAlchemy reads it), None for any other store or an in-memory database."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = unquote(uri[len(prefix) :].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def open_client(uri: str) -> MlflowClient:
    """A client of the tracking store ``uri``. A ``sqlite:`` store must exist: MLflow would
    create an empty database (and a Default experiment) on first use, so a mistyped path is a
    `RobustMSAError` naming it, before anything is written."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise RobustMSAError(
            f"no MLflow store at {db} (tracking URI {uri}): run a study first (make study), or "
            "point MLFLOW_TRACKING_URI at the study's store"
        )
    return MlflowClient(uri)


def _no_study(client: MlflowClient, experiment: str) -> RobustMSAError:
    return RobustMSAError(f"experiment '{experiment}' has no study runs in {client.tracking_uri}")


def is_study_run(run: Run) -> bool:
    """A study's parent run: tagged with the study's name, nested under nothing."""
    tags = run.data.tags
    return STUDY_TAG in tags and PARENT_TAG not in tags


def find_study(
    client: MlflowClient,
    experiment: str,
    parent_run_id: str | None = None,
    *,
    kind: str | None = None,
) -> Run:
    """The parent run of a study of experiment ``experiment``: ``parent_run_id``, else the
    study that started last (whatever its status: a running or failed study is shown as far
    as it got). ``kind``: only a study of that ``study.kind`` (``search``,
    ``compare_models`` ...).

    `RobustMSAError` ``experiment 'X' has no study runs in <uri>`` when the experiment is
    missing, deleted or holds no study (of ``kind``); another naming ``parent_run_id`` when
    that run is not a study's parent run of the experiment (or not of ``kind``)."""
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        raise _no_study(client, experiment)
    if parent_run_id:
        from robustmsa.evaluation.report import get_run

        run = get_run(client, parent_run_id)
        if run.info.experiment_id != found.experiment_id or not is_study_run(run):
            raise RobustMSAError(
                f"run {parent_run_id!r} is not the parent run of a study of experiment "
                f"'{experiment}' in {client.tracking_uri}"
            )
        if kind and study_kind(run) != kind:
            raise RobustMSAError(
                f"run {parent_run_id!r} is a {study_kind(run)} study, not a {kind} study"
            )
        return run
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` != ''",
        run_view_type=ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time DESC"],
        max_results=MAX_RUNS,
    )
    studies = [r for r in runs if is_study_run(r)]
    if not studies:
        raise _no_study(client, experiment)
    of_kind = [r for r in studies if not kind or study_kind(r) == kind]
    if not of_kind:
        kinds = sorted({study_kind(r) for r in studies})
        raise RobustMSAError(
            f"experiment '{experiment}' has no {kind} study runs in {client.tracking_uri} "
            f"(only {', '.join(kinds)})"
        )
    return of_kind[0]


def study_runs(client: MlflowClient, parent: Run) -> list[Run]:
    """The child runs of the study ``parent`` (its trials, the reference model, the models of
    a comparison), by start time."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=MAX_RUNS,
    )
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def study_kind(parent: Run) -> str:
    """``study.kind`` of the study: ``search``, ``compare_models``, ``per_rate`` ..."""
    return parent.data.params.get(KIND_PARAM, "search")


def selected_run_id(parent: Run) -> str | None:
    """The run of the trial the study selected on validation (None while it runs)."""
    return parent.data.tags.get(SELECTED_TAG)


def reference_run_id(parent: Run, runs: Sequence[Run] = ()) -> str | None:
    """The reference model's run: the parent's tag, else the child of role ``reference``."""
    tagged = parent.data.tags.get(REFERENCE_TAG)
    if tagged:
        return tagged
    found = [r.info.run_id for r in runs if r.data.tags.get(ROLE_TAG) == REFERENCE_ROLE]
    return found[0] if found else None


def search_space(parent: Run) -> list[ParamSpace]:
    """The searched space of the study, from its parent's ``search.space`` param (the
    `ParamSpace` list of the config, logged as its Python repr); empty for a study that
    searched nothing. `RobustMSAError` when the param cannot be read back."""
    text = parent.data.params.get(SPACE_PARAM)
    if not text:
        return []
    try:
        entries = ast.literal_eval(text)
        return [ParamSpace(**entry) for entry in entries]
    except (ValueError, SyntaxError, TypeError) as exc:
        raise RobustMSAError(
            f"run {parent.info.run_id}: param {SPACE_PARAM} is not a search space ({exc}): "
            f"{text[:200]}"
        ) from exc


def study_scores(parent: Run) -> dict[str, float]:
    """The validation spectrum scores the study logged on its parent: ``best`` (the selected
    trial's), ``reference`` and ``oracle``, those present."""
    metrics = parent.data.metrics
    names = {"best": SEARCH_METRIC, "reference": f"reference/{OBJECTIVE}"}
    names["oracle"] = f"oracle/{OBJECTIVE}"
    return {k: metrics[m] for k, m in names.items() if m in metrics}
