"""What a study prints while it runs: one line per trial event, and Ray's noise held back.

`ConsoleProgress` is a driver-side Tune callback that prints one line per trial event (start,
each epoch with its validation score, pruned, completed, error), each with the elapsed time,
the best score so far and the trials done out of the total::

    [  41.3s] trial_3f2a1 epoch 4/8  val score 0.8123  best 0.7990 (trial_9c1d2)  done 2/8

`quiet_ray_logs` holds back, in the process that calls it, the INFO lines that Ray, Tune, MLflow
and Optuna repeat without news (`QUIET_LOGGERS`) and Tune's own console output (its experiment
table and TensorBoard hint: the legacy output engine, which prints nothing at ``verbose=0``);
``verbose=True`` brings all of it back. Warnings and errors always pass: trial errors still
reach the console through Ray's ``log_to_driver``. The per-checkpoint line is logged in the
trial process (Ray Train's storage code), so the trial processes need the same: ray.init with
`worker_runtime_env` runs `quiet_worker_logs` in every worker process of the job.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from ray import tune

VARIANT_KEY = "robustmsa.variant"  # as robustmsa.search.trial.VARIANT_KEY (not imported: MLflow)

# Logger -> what it repeats at INFO. The first two log in trial and Train worker processes.
QUIET_LOGGERS = {
    # "Checkpoint successfully created at: Checkpoint(...)", once per reported checkpoint
    # (every epoch of every trial), from `tune.report` in the trial process.
    "ray.train._internal.storage": "Checkpoint successfully created at: ... (per epoch)",
    # The same line from a TorchTrainer trial's Train workers (Ray Train v2, the default).
    "ray.train.v2._internal.execution.storage": "Checkpoint successfully created at: ...",
    # "Creating initial MLflow database tables..." / "Updating database tables" (a new sqlite
    # store; the first MlflowClient call of the driver).
    "mlflow.store.db.utils": "Creating initial MLflow database tables...",
    # "A new study created in memory with name: optuna" (Tune's OptunaSearch, once per study).
    "optuna.storages._in_memory": "A new study created in memory with name: optuna",
    # "Restored on <ip> from checkpoint: ..." once per restarted trial (the console's own line
    # says it: robustmsa.search.console.ConsoleProgress.on_trial_recover).
    "ray.tune.trainable.trainable": "Restored on ... from checkpoint: ...",
}
# Environment switches set (unless the user set them) while quiet. RAY_AIR_NEW_OUTPUT=0: Tune's
# legacy output engine, silent at verbose=0, where the default engine prints each experiment's
# configuration table, "View detailed results here" and the TensorBoard hint (and a result
# table per failed trial) whatever the verbosity. MLflow's "Downloading artifacts" bars (the
# finishing and presentation tasks download checkpoints) are tqdm bars, not log lines.
QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
QUIET_LEVEL = logging.WARNING
WORKER_SETUP_HOOK = f"{__name__}.quiet_worker_logs"

_saved_levels: dict[str, int] = {}
_set_env: list[str] = []
_quiet = False


def quiet_ray_logs(verbose: bool = False) -> None:
    """Hold back (``verbose=False``) or bring back (``verbose=True``) the repeated INFO noise
    of this process: the loggers of `QUIET_LOGGERS` go to WARNING (one already stricter keeps
    its level) and the switches of `QUIET_ENV` are set where the environment does not set them
    already. ``verbose=True`` restores what an earlier quiet call changed. Idempotent; call it
    in the driver before Ray starts (a local Ray's workers then inherit the environment)."""
    global _quiet
    if verbose:
        for name, level in _saved_levels.items():
            logging.getLogger(name).setLevel(level)
        _saved_levels.clear()
        for key in _set_env:
            os.environ.pop(key, None)
        _set_env.clear()
        _quiet = False
        return
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        _saved_levels.setdefault(name, logger.level)
        if logger.level < QUIET_LEVEL:
            logger.setLevel(QUIET_LEVEL)
    for key, value in QUIET_ENV.items():
        if key not in os.environ:
            os.environ[key] = value
            _set_env.append(key)
    _quiet = True


@contextlib.contextmanager
def quiet_console(verbose: bool = False) -> Iterator[None]:
    """`quiet_ray_logs` for the span of one study: what this call held back comes back when the
    block ends, however it ends, so that an entry point run from a notebook or a test leaves
    the process's logging as it found it. A console already quiet (a caller's own
    `quiet_ray_logs`) is left quiet; ``verbose`` brings everything back, as
    ``quiet_ray_logs(True)`` does."""
    quieted_here = not verbose and not _quiet
    quiet_ray_logs(verbose)
    try:
        yield
    finally:
        if quieted_here:
            quiet_ray_logs(True)


def quiet_worker_logs() -> None:
    """`quiet_ray_logs` in a Ray worker process (the ``worker_process_setup_hook``)."""
    quiet_ray_logs(False)


def worker_runtime_env() -> dict[str, Any]:
    """Entries to merge into ``ray.init``'s ``runtime_env``: while this process is quiet (see
    `quiet_ray_logs`), every worker process of the job runs `quiet_worker_logs` when it starts
    (trials, TorchTrainer workers, finishing tasks); else nothing."""
    return {"worker_process_setup_hook": WORKER_SETUP_HOOK} if _quiet else {}


# ---------------------------------------------------------------------------------------------
# One line per trial event


def fmt_value(value: Any) -> str:
    """A parameter value as the study's summary prints it: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def format_params(params: dict[str, Any]) -> str:
    """``{"model.params.lr": 0.001234, ...}`` as ``lr=0.00123, ...`` (sorted by key path)."""
    return ", ".join(f"{k.split('.')[-1]}={fmt_value(v)}" for k, v in sorted(params.items()))


def _score(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value) if math.isfinite(value) else None


# The exception line that ends a Python traceback: a qualified exception name at column 0.
_EXCEPTION_LINE = re.compile(
    r"^((?:[A-Za-z_]\w*\.)*)([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning)):"
)


def trial_error(trial) -> str:
    """The error of a failed Tune trial in one line, from the text file Tune writes for it in
    the driver's staging directory (the traceback of the trial's exception): its last
    exception line with the lines that continue its message, the exception named without its
    module. Tune's pickled copy of the exception is not read: unpickling runs code."""
    path = getattr(trial, "error_file", None)
    if not path or not os.path.exists(path):
        return "see Tune's error file"
    with open(path, errors="replace") as f:
        lines = [ln.rstrip() for ln in f if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        found = _EXCEPTION_LINE.match(lines[i])
        if found:
            message = " ".join(ln.strip() for ln in [lines[i], *lines[i + 1 :]])
            return message[len(found.group(1)) :]
    return lines[-1].strip() if lines else "see Tune's error file"


class ConsoleProgress(tune.Callback):
    """Prints one line per trial event of a Tune experiment to ``stream`` (default: the
    current ``sys.stdout``); see the module docstring.

    ``total``: the trials the experiment will run (``search.num_samples``, or the number of
    variants); ``epochs``: ``training.epochs`` (a trial's own report of ``epochs`` wins);
    ``metric``: the per-epoch validation score, minimised (``best/<metric>`` is the trial's
    best so far, which the best-so-far column compares); ``label``: the prefix of the trial
    names (``trial`` for a search, the experiment's name for variants), as in the experiment's
    ``trial_name_creator``; ``started``: ``time.time()`` when the study started, so that the
    elapsed time runs on across the study's experiments (default: now).

    A trial is a searched point (its start line shows the sampled parameters) or a fixed
    variant (``{"robustmsa.variant": {"role": ..., "overrides": ...}}``: its role is shown).
    It ends completed (all its epochs, or stopped by its own patience), pruned (stopped by the
    scheduler before that; the rule of `robustmsa.search.trial.finish_trial_run`, from the
    ``epochs`` and ``patience_exhausted`` the loop reports) or with an error.
    """

    def __init__(
        self,
        total: int,
        epochs: int,
        metric: str = "val/spectrum_score",
        label: str = "trial",
        started: float | None = None,
        stream: TextIO | None = None,
        budget: int | None = None,
    ):
        self.total = total
        self.budget = budget  # the search's trial-epoch budget: shown beside the trials done
        self.epochs = epochs
        self.metric = metric
        self.label = label
        self.started = time.time() if started is None else started
        self.stream = stream
        self.outcomes: dict[str, str] = {}  # trial id -> completed / pruned / error
        self._best: dict[str, float] = {}  # trial id -> its best score so far (not errored)
        self._trained: dict[str, int] = {}  # trial id -> the epochs it reported

    # -- formatting

    def name(self, trial) -> str:
        name = f"{self.label}_{trial.trial_id}"
        variant = (trial.config or {}).get(VARIANT_KEY)
        return f"{name} ({variant['role']})" if isinstance(variant, dict) else name

    def _status(self) -> str:
        if self._best:
            tid = min(self._best, key=self._best.__getitem__)
            best = f"best {self._best[tid]:.4f} ({self.label}_{tid})"
        else:
            best = "best -"
        spent = f", {self.spent}/{self.budget} trial-epochs" if self.budget else ""
        return f"{best}  done {len(self.outcomes)}/{self.total}{spent}"

    @property
    def spent(self) -> int:
        """Trial-epochs reported so far."""
        return sum(self._trained.values())

    def _emit(self, trial, text: str) -> None:
        elapsed = time.time() - self.started
        line = f"[{elapsed:7.1f}s] {self.name(trial)} {text}  {self._status()}"
        print(line, file=self.stream or sys.stdout, flush=True)

    def _epochs(self, result: dict) -> int:
        epochs = result.get("epochs")
        return int(epochs) if isinstance(epochs, numbers.Real) else self.epochs

    def outcome(self, result: dict) -> str:
        """``completed``, ``pruned`` or ``no result`` for a trial that ended with ``result``
        (its last). Completed: it ran all its epochs, or stopped by its own patience (the
        loop's ``patience_exhausted``; without it, a trial that returned by itself, Tune's
        ``done``). Pruned: the scheduler stopped it before."""
        epoch = result.get("epoch")
        if epoch is None:
            return "no result"
        if "patience_exhausted" in result:
            own_stop = bool(result["patience_exhausted"])
        else:
            own_stop = bool(result.get("done"))
        return "completed" if epoch >= self._epochs(result) or own_stop else "pruned"

    # -- Tune's hooks

    def on_trial_start(self, iteration, trials, trial, **info):
        config = trial.config or {}
        if VARIANT_KEY in config:
            self._emit(trial, "started")
        else:
            self._emit(trial, f"started  {format_params(config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        best = _score(result.get("best/" + self.metric))
        if best is not None:
            self._best[trial.trial_id] = best
        if isinstance(result.get("epoch"), numbers.Real):
            self._trained[trial.trial_id] = int(result["epoch"])
        score = _score(result.get(self.metric))
        shown = f"{score:.4f}" if score is not None else "-"
        epoch = result.get("epoch", "?")
        self._emit(trial, f"epoch {epoch}/{self._epochs(result)}  val score {shown}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        outcome = self.outcome(result)
        self.outcomes[trial.trial_id] = outcome
        if outcome == "no result":
            self._emit(trial, "ended without reporting a result")
            return
        epoch, epochs = result["epoch"], self._epochs(result)
        best = _score(result.get("best/" + self.metric))
        own = ""
        if best is not None:
            own = f"trial best {best:.4f} (epoch {result.get('best/epoch')})"
        if outcome == "pruned":
            text = f"pruned at epoch {epoch}/{epochs}"
        elif epoch < epochs:
            text = f"completed, stopped early (patience) at epoch {epoch}/{epochs}"
        else:
            text = f"completed {epoch}/{epochs} epochs"
        self._emit(trial, f"{text}  {own}".rstrip())

    def on_trial_error(self, iteration, trials, trial, **info):
        self.outcomes[trial.trial_id] = "error"
        self._best.pop(trial.trial_id, None)  # a failed trial is never selected
        result = trial.last_result or {}
        epoch = result.get("epoch")
        where = f" at epoch {epoch}/{self._epochs(result)}" if epoch is not None else ""
        self._emit(trial, f"error{where}: {trial_error(trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Its process, worker or node was lost (or it raised): Tune restarts it from its last
        # checkpoint (study.max_failures), and its run records the restart.
        result = trial.last_result or {}
        epoch = result.get("epoch")
        after = f" after epoch {epoch}" if epoch is not None else " from the start"
        self._emit(trial, f"failed ({trial_error(trial)}); restarting{after}")

    def on_experiment_end(self, trials, **info):
        counts = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        if self.budget and self.spent >= self.budget:
            # The budget stopped the trials still running; Tune reports no end for them.
            cut = sum(1 for t in trials if t.trial_id not in self.outcomes)
            counts["stopped by the budget"] = cut
        parts = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no trial ended"
        elapsed = time.time() - self.started
        line = f"[{elapsed:7.1f}s] {self.label}: {parts}  {self._status()}"
        print(line, file=self.stream or sys.stdout, flush=True)
