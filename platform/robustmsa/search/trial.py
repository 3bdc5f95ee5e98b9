"""One Tune trial and the end of its MLflow run.

`run_trial` (in the trial process) resolves the trial's config, opens a nested child run, logs
the resolved parameters and trains; per-epoch metrics reach the run through an MLflow sink.
`TrialRunFinisher` (a Tune callback on the driver) ends the run once Tune is done with the trial,
however it ended: it logs what the trial's last checkpoint holds and sets the final status. The
driver is the one place that sees every trial end: when ASHA stops a trial (or the trial
reaches ``max_t``), Tune ends the trial's thread with ``SystemExit`` at its next report, so code
after that report never runs in the trial.

The finishing work itself (`finish_trial_run`) runs as a Ray task, not in the callback: Tune's
driver loop stops scheduling while a callback runs. The callback only submits the task. Either
Tune's end of experiment (`on_experiment_end`) waits for every task, so that when
``Tuner.fit`` returns every run has its final state, or the study collects the tasks of all its
experiments in one `FinishingTasks` and waits at its end.

Final states: ``FINISHED`` with tag ``robustmsa.outcome`` = ``completed`` (ran all epochs or
stopped by its own patience) or ``pruned`` (stopped by ASHA, or by the study's trial-epoch
budget after some epochs); ``FAILED`` when the trial raised; ``KILLED`` with ``stopped`` when
the budget stopped it before its first epoch.
What each gets follows the study's evaluation policy (`robustmsa.search.study_evaluation`): a
pruned trial ends with what it logged while training; a completed one gets its best epoch's
validation spectrum; the test split is evaluated once, either for the study's selected trial
after the search or, with ``evaluate_test``, for every completed trial in its finishing task.

A trial is either a searched point (the sampled key paths) or a fixed variant
(``{VARIANT_KEY: {"role": ..., "overrides": {...}}}``, see `robustmsa.search.variants`), whose
run is tagged ``robustmsa.role``. When the study trained a reference model, every finished
trial also gets its effective robustness against it (``robust/.../effective_<metric>``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from robustmsa.config import from_dict
from robustmsa.data.remote import filesystem, is_uri
from robustmsa.data.source import dataset_dir
from robustmsa.errors import RobustMSAError
from robustmsa.evaluation.logged import evaluate_test_once
from robustmsa.evaluation.summaries import effective_robustness_summary
from robustmsa.provenance import code_tags
from robustmsa.search.interrupt import INTERRUPTED
from robustmsa.tracking.dataset import log_dataset_input
from robustmsa.tracking.runs import (
    TRIAL_TAG,
    MlflowEpochSink,
    flatten,
    log_metrics,
    log_params,
    set_tags,
    start_run,
)
from robustmsa.tracking.spectrum import log_spectrum
from robustmsa.tracking.spool import SpoolingClient
from robustmsa.training.checkpoint import (
    BEST_MODEL_FILE,
    CONFIG_FILE,
    ROWS_FILE,
    STATE_FILE,
    ResumePoint,
    load_resume_point,
    load_state,
)
from robustmsa.training.loop import OBJECTIVE
from robustmsa.training.trainer import fit, resolve_backend

VARIANT_KEY = "robustmsa.variant"
ROLE_TAG = "robustmsa.role"


@dataclass
class StudyContext:
    """What every trial needs from the driver (sent once with ``tune.with_parameters``)."""

    base: dict[str, Any]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    storage_path: str


def run_trial(sampled: dict[str, Any], ctx: StudyContext) -> None:
    """The Tune function trainable: config from the sampled point, the trial's child run,
    training. A restarted trial (its process, worker or node lost; a resumed study) continues
    from Tune's last checkpoint of it, in the run it had (`open_trial_run`)."""
    tune_ctx = tune.get_context()
    trial_id = tune_ctx.get_trial_id()
    tags = {TRIAL_TAG: trial_id}
    if VARIANT_KEY in sampled:
        variant = sampled[VARIANT_KEY]
        sampled = variant["overrides"]
        tags[ROLE_TAG] = variant["role"]
    config = from_dict(ctx.base, sampled)
    client = SpoolingClient(ctx.tracking_uri)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as local:
            resume = load_resume_point(local)
    run_id, logged_through = open_trial_run(
        client, ctx, tune_ctx.get_trial_name(), tags, config, resume
    )
    try:
        fit(
            config,
            sinks=[MlflowEpochSink(ctx.tracking_uri, run_id, skip_through=logged_through)],
            in_tune=True,
            storage_path=ctx.storage_path,
            resume=resume,
            run_name=f"{config.name}-{trial_id}",
        )
    except Exception as exc:
        # The driver's TrialRunFinisher sets the final status. A trial that Tune stopped can
        # still raise here afterwards (a TorchTrainer loses its workers): that is not an error
        # of the trial, and the run has already ended.
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "robustmsa.error", f"{type(exc).__name__}: {exc}"[:5000])
        raise


RESTARTS_TAG = "robustmsa.restarts"


def open_trial_run(
    client: MlflowClient,
    ctx: StudyContext,
    name: str,
    tags: dict[str, str],
    config,
    resume: ResumePoint | None,
) -> tuple[str, int]:
    """The trial's child run and the last epoch it has logged (-1: none).

    A trial's first start creates the run and logs the resolved parameters and the dataset; a
    restart finds the run by its trial id (whatever status an interruption left it in), marks
    it RUNNING again and counts the restart (``robustmsa.restarts``, with the epoch it
    continues after in ``robustmsa.resumed_after_epoch``). ``robustmsa.process`` names the
    host and process training it (what a fault drill kills)."""
    process = {"robustmsa.process": f"{socket.gethostname()}:{os.getpid()}"}
    found = client.search_runs(
        [ctx.experiment_id],
        filter_string=f"tags.`{TRIAL_TAG}` = '{tags[TRIAL_TAG]}' "
        f"and tags.mlflow.parentRunId = '{ctx.parent_run_id}'",
    )
    if found:
        run = found[0]
        run_id = run.info.run_id
        restarts = int(run.data.tags.get(RESTARTS_TAG, "0")) + 1
        client.update_run(run_id, status="RUNNING")
        resumed = {"robustmsa.resumed_after_epoch": resume.state["epoch"] if resume else "none"}
        set_tags(client, run_id, {RESTARTS_TAG: restarts, **resumed, **process})
        history = client.get_metric_history(run_id, OBJECTIVE)
        return run_id, max((m.step for m in history), default=-1)
    run_id = start_run(
        client,
        ctx.experiment_id,
        name,
        parent_run_id=ctx.parent_run_id,
        # Which copy of the package this trial imported (the job's own, on a cluster).
        tags={**tags, "robustmsa.model": config.model.name, **code_tags(), **process},
    )
    log_params(client, run_id, flatten(config.to_dict()))
    log_params(client, run_id, {"training.resolved_backend": resolve_backend(config)})
    d = config.data
    root = dataset_dir(d.source, path=d.path, preset=d.preset, seed=d.seed, cache_dir=d.cache_dir)
    log_dataset_input(client, run_id, root, context="training")
    return run_id, -1


@contextlib.contextmanager
def one_torch_thread():
    """Torch ops in this block use one intra-op thread (the previous count is restored).

    The finishing task holds one CPU while other trials train on theirs; with torch's default
    of one thread per core its threads and the trials' spin against each other: a ProMMA test
    evaluation took 31.5 s with 2 threads and 1.0 s with 1 on a 2-core machine with one other
    busy process. Ray sets ``OMP_NUM_THREADS`` = 1 for a 1-CPU worker for the same reason;
    this holds wherever that variable was set otherwise."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def last_checkpoint(
    checkpoint, metrics: dict | None, storage_path: str | None = None
) -> tune.Checkpoint | str | None:
    """A trial's last checkpoint, from Tune's ``checkpoint`` and last ``metrics`` (of a `Trial`
    or a `Result`): Tune's own (in-process trials), else the Train checkpoint whose path Ray's
    ``TuneReportCallback`` puts in the metrics (``TorchTrainer`` trials), a path inside the
    filesystem of ``storage_path`` (a local path, or a URI such as ``s3://``); None when the
    trial reported none."""
    if checkpoint is not None:
        return checkpoint
    path = (metrics or {}).get("checkpoint_path")
    if path is None or not is_uri(storage_path):
        return path
    fs, _ = filesystem(storage_path, "study.storage_path")
    return tune.Checkpoint(path, filesystem=fs)


def reported_checkpoint(
    checkpoint, metrics: dict | None, fs, trial_fs_path: str
) -> tune.Checkpoint | str | None:
    """``checkpoint`` (`last_checkpoint`), or the one a trial reported with its last result
    (``metrics``) when Tune never registered it; ``fs`` and ``trial_fs_path``: the trial's
    storage filesystem and directory there.

    Tune registers a reported checkpoint in a save step after the result; a trial stopped with
    the whole experiment meanwhile (a study's trial-epoch budget, `robustmsa.search.budget`)
    loses that step, and its newest checkpoint, complete on storage (a trainable persists it
    before it reports), would be missed: its run would end without its last epoch, or
    without any checkpoint after one epoch."""
    reported = (metrics or {}).get("checkpoint_dir_name")
    if not reported or isinstance(checkpoint, str):  # str: a TorchTrainer trial's own path
        return checkpoint
    if checkpoint is not None and Path(checkpoint.path).name == reported:
        return checkpoint
    from pyarrow.fs import FileType

    path = f"{trial_fs_path.rstrip('/')}/{reported}"
    if fs.get_file_info(path).type != FileType.Directory:
        return checkpoint
    return tune.Checkpoint(path, filesystem=fs)


def checkpoint_directory(checkpoint: tune.Checkpoint | str | None):
    """A context manager yielding ``checkpoint`` (see `last_checkpoint`) as a local directory,
    or None."""
    if isinstance(checkpoint, tune.Checkpoint):
        return checkpoint.as_directory()
    return contextlib.nullcontext(checkpoint)


def finish_trial_run(
    client: MlflowClient,
    run_id: str,
    checkpoint_dir: Path | None,
    reference_rows: list[dict] | None = None,
    device: str = "cpu",
    evaluate_test: bool = False,
) -> str:
    """Log the outcome stored in ``checkpoint_dir`` to ``run_id`` and end it; returns outcome.

    Every run gets its outcome, best epoch and epochs run as tags and its checkpoint (the best
    weights, the config, the state and the best epoch's validation rows) as artifacts, so that
    any run can be re-evaluated or drawn later. A pruned trial ends with that and what it logged
    while training. A completed one also gets its best epoch's validation spectrum (computed
    during training; the oracle's is on the parent run) and, with ``reference_rows`` (the
    reference model's validation rows), its effective robustness; with ``evaluate_test``
    (``evaluation.test_policy: completed``, and the variants of comparison studies) its one test
    evaluation, on ``device``."""
    # No checkpoint: the trial reported no epoch, stopped with its experiment before its first
    # (a study's trial-epoch budget); its run ends KILLED, as an interrupted study's do.
    outcome = "stopped"
    if checkpoint_dir is not None:
        state, rows = load_state(checkpoint_dir)
        done = state["epoch"] >= state["epochs"] or state["patience_exhausted"]
        outcome = "completed" if done else "pruned"
        if outcome == "completed" and rows:
            log_spectrum(client, run_id, rows, split="valid", figures=False)
            if reference_rows:
                effective = effective_robustness_summary(rows, reference_rows)
                log_metrics(client, run_id, [(k, v, 0) for k, v in effective.items()])
        if outcome == "completed" and evaluate_test:
            # Training and selection are over: the one test evaluation of this trial.
            evaluate_test_once(client, run_id, checkpoint_dir, device=device)
        with tempfile.TemporaryDirectory() as tmp:
            for name in (BEST_MODEL_FILE, CONFIG_FILE, STATE_FILE, ROWS_FILE):
                (Path(tmp) / name).write_bytes((checkpoint_dir / name).read_bytes())
            client.log_artifacts(run_id, tmp, artifact_path="checkpoint")
        set_tags(
            client,
            run_id,
            {"robustmsa.best_epoch": state["best_epoch"], "robustmsa.epochs_run": state["epoch"]},
        )
    client.set_tag(run_id, "robustmsa.outcome", outcome)
    client.set_terminated(run_id, "FINISHED" if checkpoint_dir is not None else "KILLED")
    return outcome


@ray.remote
def _finish_trial_run_task(
    tracking_uri: str,
    run_id: str,
    checkpoint: tune.Checkpoint | str | None,
    reference_rows: list[dict] | None,
    device: str,
    evaluate_test: bool,
) -> str:
    """`finish_trial_run` in a Ray worker (`TrialRunFinisher`)."""
    with checkpoint_directory(checkpoint) as local, one_torch_thread():
        return finish_trial_run(
            SpoolingClient(tracking_uri),
            run_id,
            Path(local) if local else None,
            reference_rows,
            device,
            evaluate_test,
        )


def error_line(exc: BaseException) -> str:
    """The cause of a task or trial error in one line: the task's own exception when Ray
    wrapped it (``RayTaskError.cause``; Ray's text adds its header and traceback), its message
    joined onto one line; otherwise the last line of the text."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        message = " ".join(ln.strip() for ln in str(cause).splitlines() if ln.strip())
        return f"{type(cause).__name__}: {message}" if message else type(cause).__name__
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


class FinishingTasks:
    """The finishing tasks submitted by `TrialRunFinisher` callbacks, awaited together.

    A study shares one across its Tune experiments, so that the reference model's finishing
    (a minute of test evaluation) overlaps the search instead of delaying its start.
    """

    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self._pending: list[tuple[str, str, ray.ObjectRef]] = []

    def add(self, trial_id: str, run_id: str, task: ray.ObjectRef) -> None:
        self._pending.append((trial_id, run_id, task))

    def wait(self) -> None:
        """Wait for every task submitted so far. Raises `RobustMSAError` naming every run whose
        finishing failed; each such run is marked ``FAILED`` with the cause in its
        ``robustmsa.error`` tag (unless the task itself already ended it)."""
        pending, self._pending = self._pending, []
        failed = []
        client = SpoolingClient(self.tracking_uri)
        for trial_id, run_id, task in pending:
            try:
                ray.get(task)
            except Exception as exc:  # the task's error, or its worker died
                why = error_line(exc)
                failed.append(f"trial {trial_id} (run {run_id}): {why}")
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_tag(run_id, "robustmsa.error", why[:5000])
                    client.set_tag(run_id, "robustmsa.outcome", "error")
                    client.set_terminated(run_id, "FAILED")
        if failed:
            raise RobustMSAError(f"finishing trial runs failed: {'; '.join(failed)}")

    def __getstate__(self) -> dict:
        # Pickled with Tune's run config (tuner.pkl): references of this Ray session's tasks
        # mean nothing to a resumed study.
        return {**self.__dict__, "_pending": []}

    def cancel(self) -> None:
        """Cancel the tasks not yet awaited (a study that is failing or interrupted); their
        runs are left for the study's own clean-up to end."""
        pending, self._pending = self._pending, []
        for _, _, task in pending:
            ray.cancel(task)


class TrialRunFinisher(tune.Callback):
    """Ends each trial's MLflow run once Tune is done with the trial (module docstring).

    ``evaluate_test``: completed trials are evaluated on the test split in their finishing
    task, which then holds ``resources`` (in the study's trial resource keys: ``{"cpu": 1}``,
    plus ``"gpu": 1`` to evaluate on a GPU); without it a finishing task only logs what the
    checkpoint holds (MLflow and storage I/O, no model evaluation) and holds no CPU, so it never
    waits behind, nor delays, a training trial. ``tasks``: a study's shared
    `FinishingTasks`, which its owner waits for; without it the finisher waits for its own
    tasks at the end of the experiment, and raises `RobustMSAError` there naming every run whose
    finishing failed (`FinishingTasks.wait`). ``storage_path``: the study's Tune storage, which
    locates a ``TorchTrainer`` trial's checkpoint on a remote filesystem.

    ``reference_rows``: the reference model's validation rows, or a `concurrent.futures.Future`
    of them while the reference still trains beside the search: a trial that completes before
    them has its finishing held back (its run stays RUNNING) and submitted once they are there
    (`submit_held`, also tried at every step of Tune's loop).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        reference_rows: list[dict] | Future | None = None,
        resources: dict[str, float] | None = None,
        tasks: FinishingTasks | None = None,
        storage_path: str | None = None,
        evaluate_test: bool = False,
    ):
        self.tracking_uri = tracking_uri
        self.storage_path = storage_path
        self.experiment_id = experiment_id
        self.reference_rows = reference_rows
        self.evaluate_test = evaluate_test
        resources = (resources or {"cpu": 1}) if evaluate_test else {"cpu": 0}
        self._options = {
            "num_cpus": resources.get("cpu", 1),
            "num_gpus": resources.get("gpu", 0),
        }
        self._device = "cuda" if resources.get("gpu", 0) else "cpu"
        self._reference_ref = None
        self._held: list[tuple[str, str, Any]] = []  # (trial id, run id, checkpoint)
        self._seen: set[str] = set()  # trial ids whose end this finisher handled
        self._owns_tasks = tasks is None
        self.tasks = FinishingTasks(tracking_uri) if tasks is None else tasks

    def __getstate__(self) -> dict:
        # Tune pickles its run config, callbacks included (tuner.pkl, for a restore): a Future
        # of this process does not pickle, and what is held belongs to this process.
        state = self.__dict__.copy()
        if isinstance(state["reference_rows"], Future):
            state["reference_rows"] = None
        state["_held"] = []
        return state

    def _reference(self) -> tuple[bool, Any]:
        """(ready, the rows' ObjectRef or None): rows are put once into the object store
        rather than pickled into every task; a failed reference gives None (the study fails
        on it itself)."""
        rows = self.reference_rows
        if isinstance(rows, Future):
            if not rows.done():
                return False, None
            rows = None if rows.exception() else rows.result()
        if rows and self._reference_ref is None:
            self._reference_ref = ray.put(rows)
        return True, self._reference_ref

    def _submit(self, trial_id: str, run_id: str, checkpoint, reference) -> None:
        task = _finish_trial_run_task.options(**self._options).remote(
            self.tracking_uri, run_id, checkpoint, reference, self._device, self.evaluate_test
        )
        self.tasks.add(trial_id, run_id, task)

    def submit_held(self, wait: bool = False) -> None:
        """Submit the finishing held back for the reference's rows, once they are there
        (``wait``: block until they are)."""
        if not self._held:
            return
        if wait and isinstance(self.reference_rows, Future):
            futures.wait([self.reference_rows])
        ready, reference = self._reference()
        if ready:
            held, self._held = self._held, []
            for trial_id, run_id, checkpoint in held:
                self._submit(trial_id, run_id, checkpoint, reference)

    def on_step(self, iteration, trials, **info):
        self.submit_held()

    def _runs(self, client: MlflowClient, trial) -> list:
        return client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial.trial_id}' and status = 'RUNNING'",
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        if INTERRUPTED.is_set():
            # Tune is stopping the trials of an interrupted study: not an end of this trial
            # (its run ends KILLED; a resume continues it, or finishes it by
            # `finish_leftovers` when Tune had already finished it).
            return
        self._seen.add(trial.trial_id)
        client = SpoolingClient(self.tracking_uri)
        ready, reference = self._reference()
        for run in self._runs(client, trial):
            checkpoint = reported_checkpoint(
                last_checkpoint(trial.checkpoint, trial.last_result, self.storage_path),
                trial.last_result,
                trial.storage.storage_filesystem,
                trial.storage.trial_fs_path,
            )
            if ready:
                self._submit(trial.trial_id, run.info.run_id, checkpoint, reference)
            else:
                self._held.append((trial.trial_id, run.info.run_id, checkpoint))

    def on_trial_error(self, iteration, trials, trial, **info):
        if INTERRUPTED.is_set():
            return
        self._seen.add(trial.trial_id)
        client = SpoolingClient(self.tracking_uri)
        for run in self._runs(client, trial):
            client.set_tag(run.info.run_id, "robustmsa.outcome", "error")
            client.set_terminated(run.info.run_id, "FAILED")

    def finish_leftovers(self, results) -> None:
        """Finish the runs of trials that Tune had finished but whose runs never ended: a
        study interrupted (or its driver killed) after a trial completed and before its run
        was finished. ``results``: the experiment's ``ResultGrid`` after a resumed fit, in
        which such trials come back finished and are not run again."""
        client = SpoolingClient(self.tracking_uri)
        for result in results:
            trial_id = (result.metrics or {}).get("trial_id")
            if result.error or trial_id is None or trial_id in self._seen:
                continue
            self._seen.add(trial_id)
            runs = client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}'"
            )
            checkpoint = reported_checkpoint(
                last_checkpoint(result.checkpoint, result.metrics, self.storage_path),
                result.metrics,
                result.filesystem,
                result.path,
            )
            for run in runs:
                if run.info.status in ("FINISHED", "FAILED"):
                    continue
                client.update_run(run.info.run_id, status="RUNNING")
                self._held.append((trial_id, run.info.run_id, checkpoint))
        self.submit_held(wait=True)

    def on_experiment_end(self, trials, **info):
        if INTERRUPTED.is_set():
            return  # the study's teardown ends what is left (module robustmsa.search.interrupt)
        if self._owns_tasks:
            self.submit_held(wait=True)
            self.tasks.wait()
