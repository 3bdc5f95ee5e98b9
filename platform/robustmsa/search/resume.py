"""Which study a resume continues, and whether it may.

A study is resumed by its parent run (``robustmsa resume --run-id PARENT``, or a study script's
``--resume [PARENT]``: without an id, the latest interrupted or killed study of the script's
config). `robustmsa.search.study.run_study` then reuses that parent run, restores each of the
study's Tune experiments from its saved state (`robustmsa.search.tuner.build_tuner`) and reuses
every trial's run (`robustmsa.search.trial.open_trial_run`). What may be resumed is checked
here, before Ray starts or anything is written: the run is a study's parent, ended KILLED (an
interrupted study) or still RUNNING with no live driver (a killed one), and the config is the
one it ran with (``study_config.yaml`` on the parent; docs/faults.md says why a changed config
is refused rather than merged).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import yaml

from robustmsa.config import StudyConfig, from_dict
from robustmsa.errors import RobustMSAError
from robustmsa.tracking.runs import PARENT_TAG, STUDY_TAG

RESUMABLE = ("KILLED", "RUNNING")


def resume_hint(parent_run_id: str) -> str:
    """How to resume the study of ``parent_run_id`` (printed when it is interrupted)."""
    return (
        f"resume it with: robustmsa resume --run-id {parent_run_id} (or the study script "
        "with the same arguments and --resume)"
    )


def _study_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise RobustMSAError(f"run {run_id}: not found in {client.tracking_uri}") from exc
    if STUDY_TAG not in run.data.tags or PARENT_TAG in run.data.tags:
        raise RobustMSAError(f"run {run_id}: not a study's parent run (nothing to resume)")
    return run


def logged_config(client, run_id: str) -> StudyConfig:
    """The config a study ran with (``study_config.yaml`` on its parent run)."""
    from robustmsa.search.study import STUDY_CONFIG_FILE

    try:
        with tempfile.TemporaryDirectory(prefix="robustmsa-resume-") as tmp:
            text = Path(client.download_artifacts(run_id, STUDY_CONFIG_FILE, tmp)).read_text()
    except Exception as exc:  # missing artifact: a study from before resume existed
        raise RobustMSAError(
            f"run {run_id}: has no {STUDY_CONFIG_FILE} (a study started before resuming "
            "existed cannot be resumed)"
        ) from exc
    return from_dict(yaml.safe_load(text))


def _first_difference(a, b, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = _first_difference(a.get(key), b.get(key), f"{path}{key}.")
            if found:
                return found
        return None
    return None if a == b else f"{path.rstrip('.')}: {b!r} now, {a!r} when it ran"


def check_resumable(client, run_id: str, config: StudyConfig) -> None:
    """`RobustMSAError` unless ``run_id`` is an interrupted or killed study of ``config``
    (module docstring)."""
    from robustmsa.search.study import DRIVER_TAG

    run = _study_run(client, run_id)
    status = run.info.status
    if status not in RESUMABLE:
        raise RobustMSAError(
            f"run {run_id}: the study ended {status}; only an interrupted (KILLED) or killed "
            "(still RUNNING) study can be resumed"
        )
    name = run.data.tags[STUDY_TAG]
    if name != config.name:
        raise RobustMSAError(f"run {run_id}: a study of config {name!r}, not {config.name!r}")
    driver = run.data.tags.get(DRIVER_TAG, "")
    host, _, pid = driver.rpartition(":")
    here = status == "RUNNING" and host == socket.gethostname() and pid.isdigit()
    if here and int(pid) != os.getpid() and _alive(int(pid)):
        raise RobustMSAError(
            f"run {run_id}: its study is still running (process {pid}); stop it first"
        )
    difference = _first_difference(logged_config(client, run_id).to_dict(), config.to_dict())
    if difference:
        raise RobustMSAError(
            f"run {run_id}: the config differs from the one the study ran with ({difference}); "
            "a resumed study runs its own config"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def latest_resumable(client, experiment: str, study: str) -> str:
    """The parent run of the latest interrupted or killed study named ``study``."""
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{study}'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
        )
        for run in runs:
            if PARENT_TAG not in run.data.tags and run.info.status in RESUMABLE:
                return run.info.run_id
    raise RobustMSAError(
        f"--resume: no interrupted or killed study {study!r} in experiment {experiment!r} of "
        f"{client.tracking_uri}"
    )


def study_root(client, run_id: str) -> str:
    """The folder the study's local outputs resolved against (its ``robustmsa.root`` tag)."""
    from robustmsa.search.study import ROOT_TAG

    run = _study_run(client, run_id)
    if ROOT_TAG not in run.data.tags:
        raise RobustMSAError(f"run {run_id}: has no {ROOT_TAG} tag (cannot be resumed)")
    return run.data.tags[ROOT_TAG]
