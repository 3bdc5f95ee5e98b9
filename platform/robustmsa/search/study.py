"""Run a study: set-up, one study kind, teardown; Ray Tune trials tracked in MLflow.

Set-up checks the tracking store, the storage path and the data, starts (or joins) Ray,
resolves the trial resources and the concurrency, opens the study's parent MLflow run, logs the
config and the dataset, registers `robustmsa.search.trial.run_trial` for the study's Tune
experiments and trains the reference model (``study.reference_model``; a child run tagged
``robustmsa.role = reference``) as the kind asks: beside it, in a driver thread (``search``),
or first (the comparisons). Then the kind of ``study.kind`` runs (`robustmsa.search.kinds`:
each kind is a module with its own config section, already checked when the config loaded).
Teardown waits for or cancels the finishing tasks, ends every run still RUNNING and sets the
parent's status, however the study ends.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from robustmsa.config import StudyConfig
from robustmsa.data.parquet import open_dataset
from robustmsa.data.remote import check_storage, is_uri
from robustmsa.data.source import dataset_dir
from robustmsa.errors import ConfigError, RobustMSAError
from robustmsa.evaluation.floor import floor_metrics, log_floor, train_median
from robustmsa.search.kinds.base import REFERENCE_ROLE, StudyResult, StudySetup, Variant
from robustmsa.search.kinds.search import SEARCH_METRIC, TRIALS_TABLE

__all__ = ["REFERENCE_ROLE", "SEARCH_METRIC", "TRIALS_TABLE", "StudyResult", "run_study"]


# ---------------------------------------------------------------------------------------------
# Driver-side preparation


def absolutize(config: StudyConfig, root: Path) -> dict[str, Any]:
    """The config as a dict with every local path made absolute (trials run in other dirs)."""
    raw = config.to_dict()
    data = raw["data"]
    data["cache_dir"] = str((root / data["cache_dir"]).resolve())
    if data["path"] and not is_uri(data["path"]):
        data["path"] = str((root / data["path"]).resolve())
    storage = raw["study"]["storage_path"] or ".robustmsa/ray_results"
    if not is_uri(storage):
        storage = str((root / storage).resolve())
    raw["study"]["storage_path"] = storage
    return raw


def init_ray(logical_cpus: int = 2) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (set inside ``ray job submit``), else start a
    private local one with at least ``logical_cpus`` logical CPUs: a bare ``ray.init()`` would
    attach to any cluster left on the machine.

    On a cluster this process's own copy of the package travels with the job as a
    ``py_modules`` entry of its runtime environment (merged by Ray with the job's working dir),
    so every trial and finishing task imports the very code the driver runs, also on nodes
    whose Python cannot import robustmsa or holds an older copy."""
    import ray

    from robustmsa.provenance import PACKAGE_DIR
    from robustmsa.search.console import worker_runtime_env

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(
            address=address,
            runtime_env={"py_modules": [str(PACKAGE_DIR)], **worker_runtime_env()},
            logging_level="WARNING",
        )
    else:
        # A private local cluster needs no token auth; without this, a token file left in
        # ~/.ray by another cluster would switch auth on (docs/stack.md).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            address="local",
            num_cpus=max(logical_cpus, os.cpu_count() or 2),
            include_dashboard=False,
            logging_level="WARNING",
            # Quiet trial processes too (the per-checkpoint line is theirs), unless --verbose.
            runtime_env=worker_runtime_env() or None,
        )


# ---------------------------------------------------------------------------------------------
# The study


def backfill(spool_dir: Path, uri: str) -> str | None:
    """Replay the writes spooled under ``spool_dir`` during a tracking outage
    (`robustmsa.tracking.spool`); what the parent run's ``robustmsa.tracking.delayed`` tag
    says of them, or None when nothing was spooled. When the server is still out of reach,
    says how to replay them later (and the study's own last writes are spooled too)."""
    from mlflow.tracking import MlflowClient

    from robustmsa.tracking.spool import pending, sync

    left = pending(spool_dir)
    if not left:
        return None
    try:
        replayed = sync(spool_dir, MlflowClient(uri))
    except Exception as exc:  # still down: leave the spool for `robustmsa tracking sync`
        print(
            f"robustmsa: the tracking server {uri} is still out of reach ({type(exc).__name__}); "
            f"writes held in {spool_dir}: replay them with `robustmsa tracking sync --spool "
            f"{spool_dir} --tracking-uri {uri}`",
            file=sys.stderr,
            flush=True,
        )
        return f"writes spooled in {spool_dir}, not yet replayed"
    message = (
        f"{replayed} writes from {len(left)} processes were spooled during a tracking outage "
        f"and replayed at the study's end"
    )
    print(f"robustmsa: {message}", flush=True)
    return message


def check_root(root: Path) -> None:
    """`RobustMSAError` naming ``root`` (``--root``) unless it is, or can be made, a folder
    this process may write in."""
    if root.exists() and not root.is_dir():
        raise RobustMSAError(f"--root {root}: exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RobustMSAError(f"--root {root}: cannot be created ({exc.strerror})") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise RobustMSAError(f"--root {root}: not writable")


def reference_variant(model_name: str, kind_overrides: dict[str, Any]) -> Variant:
    """The study's reference model: ``model_name`` at its default parameters, with the
    study's data, training and spectrum settings (the baseline of effective robustness);
    ``kind_overrides``: what it resets in the kind's section (`StudyKind.reference_overrides`:
    a search space names the searched model's parameters)."""
    return Variant(REFERENCE_ROLE, {"model.name": model_name, "model.params": {}, **kind_overrides})


def register_trial(ctx, resources: dict[str, float]) -> str:
    """Register `run_trial` with ``ctx`` and ``resources`` under one name for the study's Tune
    experiments, and return the name. Tune registers a callable trainable in a process-global
    registry when its experiment starts; two experiments starting in two threads (the
    reference beside the search) raced there (``dictionary changed size during iteration``
    in ``ray.tune.registry``). Registered once here, both only read it."""
    from ray import tune

    from robustmsa.search.trial import run_trial

    name = f"robustmsa_trial_{ctx.parent_run_id[:8]}"
    tune.register_trainable(
        name, tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources)
    )
    return name


def child_runs(client, experiment_id: str, parent_run_id: str) -> dict[str, Any]:
    """The parent's child runs by their trial id (``robustmsa.trial_id``)."""
    from robustmsa.tracking.runs import TRIAL_TAG

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=10000,
    )
    return {r.data.tags[TRIAL_TAG]: r for r in runs if TRIAL_TAG in r.data.tags}


STUDY_CONFIG_FILE = "study_config.yaml"  # on the parent run: the config as loaded
ROOT_TAG = "robustmsa.root"  # on the parent run: the folder local outputs resolved against
DRIVER_TAG = "robustmsa.driver"  # on the parent run: host:pid of the process running it
RESUMES_TAG = "robustmsa.resumes"
OUTCOME_TAG = "robustmsa.outcome"
INTERRUPTED_OUTCOME = "interrupted"


def run_study(
    config: StudyConfig, root: Path | str = ".", resume_run_id: str | None = None
) -> StudyResult:
    """Run the study of ``config`` (module docstring); everything relative resolves against
    ``root``. ``resume_run_id``: the parent run of an interrupted or killed study of this
    config, continued where it stopped (`robustmsa.search.resume`).

    Ctrl-C or SIGTERM stops the whole study (`robustmsa.search.interrupt`): every run still
    RUNNING ends KILLED with ``robustmsa.outcome = interrupted`` and `StudyInterrupted` says
    how to resume it. Any other failure ends the parent FAILED with the error in its
    ``robustmsa.error`` tag."""
    from robustmsa.search.interrupt import catch_interrupts

    with catch_interrupts():
        return _run_study(config, Path(root).resolve(), resume_run_id)


def _run_study(config: StudyConfig, root: Path, resume_run_id: str | None) -> StudyResult:
    from mlflow.tracking import MlflowClient

    from robustmsa.provenance import code_identity, code_tags, describe
    from robustmsa.search.interrupt import StudyInterrupted, raise_if_interrupted
    from robustmsa.search.kinds import KINDS
    from robustmsa.search.resources import (
        cluster_capacity,
        resolve_max_concurrent,
        trial_resources,
    )
    from robustmsa.search.resume import check_resumable, resume_hint
    from robustmsa.search.trial import FinishingTasks, StudyContext
    from robustmsa.search.tuner import SNAPSHOT_S
    from robustmsa.search.variants import run_variants
    from robustmsa.tracking.dataset import log_dataset_input
    from robustmsa.tracking.runs import (
        STUDY_TAG,
        check_tracking_uri,
        end_dangling_runs,
        ensure_experiment,
        flatten,
        log_params,
        resolve_tracking_uri,
        set_tags,
        start_run,
    )
    from robustmsa.tracking.spool import DELAYED_TAG, SPOOL_ENV, SpoolingClient
    from robustmsa.training.trainer import resolve_backend

    started = time.time()
    kind = KINDS[config.study.kind]
    if config.training.epochs < 1:
        # Zero epochs validate the initial model once: a trial of nothing, then "a best trial".
        raise ConfigError(
            f"training.epochs: a study trains at least 1 epoch, got {config.training.epochs}"
        )
    check_root(root)
    # Per-epoch checkpoints trip a noisy Tune warning on every report.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's experiment state at most a second old: what a resume restores after a killed
    # driver (robustmsa.search.tuner.KEEP_CHECKPOINTS).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", SNAPSHOT_S)
    uri = resolve_tracking_uri(config.tracking.uri, root)
    explicit = config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if os.environ.get("RAY_ADDRESS") and not explicit:
        # In a Ray job: a sqlite file on the head's copy of the working dir is deleted with
        # the job, and trials on other nodes would each write a file of their own.
        raise RobustMSAError(
            f"MLFLOW_TRACKING_URI is not set: on the Ray cluster at {os.environ['RAY_ADDRESS']} "
            f"the runs would go to {uri}, inside this job's temporary working dir, out of reach "
            "of the other nodes; set MLFLOW_TRACKING_URI (or tracking.uri) to an MLflow server "
            "that every node reaches (cluster/README.md)"
        )
    check_tracking_uri(uri)
    if resume_run_id:
        # Fails now, before Ray starts, when the run is not this config's interrupted study.
        check_resumable(MlflowClient(uri), resume_run_id, config)
    base = absolutize(config, root)
    check_storage(base["study"]["storage_path"])
    d = base["data"]
    # Fails now, before any run exists, when the dataset is missing; makes synthetic data.
    data_root = dataset_dir(
        d["source"], path=d["path"], preset=d["preset"], seed=d["seed"], cache_dir=d["cache_dir"]
    )
    # The whole dataset validated before Ray starts or any run exists (a bad row named by
    # file, row and field, not behind a trial's traceback); builds this node's frame cache.
    splits = open_dataset(data_root, frame_cache=Path(d["cache_dir"]) / "frames")
    median = train_median(splits["train"].labels.numpy())
    floors = {s: floor_metrics(median, splits[s].labels.numpy()) for s in ("valid", "test")}
    st = config.study
    in_process = resolve_backend(config) == "in_process"
    plan = trial_resources(config, in_process)
    if st.max_concurrent != "auto":
        # Locally, size the logical CPUs so that max_concurrent trials fit (docs/stack.md).
        init_ray(math.ceil(st.max_concurrent * plan.footprint().get("CPU", 1)))
    else:
        init_ray()
    # Fails now, before any run exists, when no trial could ever be scheduled.
    max_concurrent = resolve_max_concurrent(
        config, plan, cluster_capacity(), kind.trial_count(config)
    )
    raise_if_interrupted("the set-up")
    identity = code_identity()
    resuming = f"; resuming parent run {resume_run_id}" if resume_run_id else ""
    print(
        f"Study {config.name}: {describe()}{resuming}; up to {max_concurrent} trials at once",
        flush=True,
    )
    # A new sqlite store is created here, once the input is good. Writes outliving MLflow's
    # retries are spooled under the root and backfilled at the end (robustmsa.tracking.spool).
    spool_dir = root / ".robustmsa" / "spool"
    os.environ.setdefault(SPOOL_ENV, str(spool_dir))
    client = SpoolingClient(uri)
    local_store = not uri.startswith(("http://", "https://", "databricks"))
    experiment_id = ensure_experiment(
        client, config.tracking.experiment, root / "mlartifacts" if local_store else None
    )
    driver = {DRIVER_TAG: f"{socket.gethostname()}:{os.getpid()}"}
    if resume_run_id:
        parent = resume_run_id
        resumes = int(client.get_run(parent).data.tags.get(RESUMES_TAG, "0")) + 1
        client.update_run(parent, status="RUNNING")
        set_tags(client, parent, {RESUMES_TAG: resumes, OUTCOME_TAG: "resumed", **driver})
    else:
        parent = start_run(
            client,
            experiment_id,
            config.name,
            tags={STUDY_TAG: config.name, ROOT_TAG: str(root), **driver, **code_tags()},
        )
    result = StudyResult(parent, experiment_id, uri, base["study"]["storage_path"], kind.name)
    result.code = identity
    result.max_concurrent = max_concurrent
    result.floor_score = floors["valid"]["mae"]
    # Every trial run's finishing task (test evaluation, figures), awaited before the end.
    finishing = FinishingTasks(uri)
    # The reference model's training beside the kind (kind.reference == "beside").
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robustmsa-reference")
    status, outcome, error = "FAILED", None, None
    try:
        if not resume_run_id:
            log_params(client, parent, flatten(base))
            log_params(client, parent, {"study.resolved_max_concurrent": max_concurrent})
            log_dataset_input(client, parent, data_root, context="study")
            log_floor(client, parent, floors)
            client.log_text(
                parent, yaml.safe_dump(config.to_dict(), sort_keys=False), STUDY_CONFIG_FILE
            )
        ctx = StudyContext(base, uri, experiment_id, parent, result.storage_path)
        setup = StudySetup(
            config=config,
            base=base,
            ctx=ctx,
            client=client,
            data_root=data_root,
            plan=plan,
            max_concurrent=max_concurrent,
            in_process=in_process,
            trainable=register_trial(ctx, plan.trial),
            finishing=finishing,
            started=started,
            result=result,
        )
        if st.reference_model and kind.reference != "none":
            beside = kind.reference == "beside"

            def train_reference() -> list[dict]:
                return run_variants(
                    ctx,
                    [reference_variant(st.reference_model, kind.reference_overrides)],
                    name="reference",
                    trainable=setup.trainable,
                    finishing_resources=plan.finishing,
                    max_concurrent=1,
                    reuse_actors=in_process,
                    finishing=finishing,  # its finishing overlaps what follows
                    # A search evaluates its reference on test after the search (its policy).
                    evaluate_test=not beside or config.evaluation.test_policy == "completed",
                    started=started,
                )[REFERENCE_ROLE]

            if beside:
                # Its own Tune experiment in a driver thread: it holds a trial's resources
                # like any trial, so the kind starts with what is left; completed trials'
                # finishing waits for its rows (effective robustness).
                setup.reference = background.submit(train_reference)
            else:
                setup.reference = train_reference()
                finishing.wait()  # the comparisons read the reference's logged test rows
                raise_if_interrupted("the reference model's test report")
        kind.run(setup)
        finishing.wait()
        raise_if_interrupted("the study's last finishing tasks")
        status, outcome = "FINISHED", "completed"
    except StudyInterrupted as exc:
        status, outcome = "KILLED", INTERRUPTED_OUTCOME
        message = f"study {config.name}: {exc}; {resume_hint(parent)}"
        raise StudyInterrupted(message, exc.signum) from None
    except KeyboardInterrupt:
        status, outcome = "KILLED", INTERRUPTED_OUTCOME
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        # A kind that failed while the reference trains: that experiment ends by itself.
        background.shutdown(wait=True, cancel_futures=True)
        finishing.cancel()  # only what a failing or interrupted study left unawaited
        # Before judging which runs dangle: what an outage held back reaches the server first.
        delayed = backfill(Path(os.environ[SPOOL_ENV]), uri)
        ended = {"robustmsa.outcome": outcome} if outcome == INTERRUPTED_OUTCOME else {}
        end_dangling_runs(client, experiment_id, parent, tags=ended)
        tags = {OUTCOME_TAG: outcome or "error"}
        if error:
            tags["robustmsa.error"] = error[:5000]
        if delayed:
            tags[DELAYED_TAG] = delayed
        set_tags(client, parent, tags)
        client.set_terminated(parent, status)
        result.wall_s = time.time() - started
    return result
