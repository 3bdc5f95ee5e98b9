"""The one place that builds Ray Tune's `Tuner` for a study's experiments.

A search (Optuna's sampler, ASHA) and a list of fixed variants (the reference model, per-rate
specialists, compared models, confirmation seeds) differ only in their search algorithm,
scheduler and parameter space; the rest is the study's: the experiment's name under its storage
path, the console and finishing callbacks, one checkpoint kept, Tune's own output off, failed trials
restarted from their last checkpoint up to ``study.max_failures`` times.

An experiment of the same name already under the storage path belongs to this very study (the
name carries the study's parent run id): the study is being resumed, and the experiment is
restored from Tune's saved state (``Tuner.restore``) instead: finished trials are kept,
unfinished and errored ones continue from their last checkpoints, the search algorithm's
history comes back from its saved state. Restoring unpickles that state: a study is resumed
only from its own storage (docs/faults.md).
"""

from __future__ import annotations

from typing import Any


def build_tuner(
    trainable: str,
    *,
    name: str,
    storage_path: str,
    callbacks: list,
    max_concurrent: int,
    reuse_actors: bool,
    trial_prefix: str,
    num_samples: int = 1,
    param_space: dict[str, Any] | None = None,
    search_alg: Any = None,
    scheduler: Any = None,
    metric: str | None = None,
    mode: str | list[str] | None = None,
    max_failures: int = 0,
    trial_epoch_budget: int | None = None,
):
    """A `tune.Tuner` for the registered ``trainable``; trials are named (and their
    directories) ``<trial_prefix>_<trial id>``; an existing experiment ``name`` is restored
    (module docstring), with these ``callbacks``.

    ``reuse_actors``: a trial process imports torch and MLflow (about 5 s on 2 cores), so
    in-process trials reuse a finished trial's actor (benchmarks/trial_overhead.py); not with a
    TorchTrainer, whose stopped trial's thread outlives Tune's reset timeout while Train shuts
    down (reuse then stalled a study here).

    ``trial_epoch_budget``: the experiment ends once its trials have trained that many epochs
    together (`robustmsa.search.budget`); a restored experiment counts what its trials had
    trained before."""
    from ray import tune

    from robustmsa.search.budget import TrialEpochBudget

    def trial_name(trial) -> str:
        return f"{trial_prefix}_{trial.trial_id}"

    path = experiment_path(storage_path, name)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        # The callbacks come back pickled from the interrupted process; this study's own
        # (its finishing tasks, its reference model's rows) replace them.
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = callbacks
        if trial_epoch_budget is not None:
            run_config.stop = TrialEpochBudget.seeded(trial_epoch_budget, _last_results(tuner))
        return tuner
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            reuse_actors=reuse_actors,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            stop=TrialEpochBudget(trial_epoch_budget) if trial_epoch_budget is not None else None,
            verbose=0,
        ),
    )


# A trial's last checkpoints kept on storage. Tune's saved experiment state names the checkpoint
# each trial had at its last snapshot (taken at least every `SNAPSHOT_S` seconds, set by the
# study); a driver killed between a newer checkpoint and the next snapshot left a state naming
# a checkpoint that keeping only one had already removed, and its resume failed on it (the
# fault drill found it). Keeping three covers the epochs of a snapshot's lag.
KEEP_CHECKPOINTS = 3
SNAPSHOT_S = "1"  # TUNE_GLOBAL_CHECKPOINT_S unless the environment sets it


def _last_results(tuner) -> list[tuple[str, dict]]:
    """``(trial id, last result)`` of a restored experiment's trials (none when Tune could
    not read them back)."""
    try:
        grid = tuner.get_results()
    except RuntimeError:  # Tune found no results to restore: nothing was trained
        return []
    return [(r.metrics["trial_id"], r.metrics) for r in grid if r.metrics]


def experiment_path(storage_path: str, name: str) -> str:
    """The directory (or URI) of experiment ``name`` under ``storage_path``."""
    return f"{storage_path.rstrip('/')}/{name}"


def fit(tuner, what: str):
    """``tuner.fit()``; `robustmsa.search.interrupt.StudyInterrupted` when the study was
    interrupted meanwhile (Tune then returns what it had: no later phase may use it)."""
    from robustmsa.search.interrupt import raise_if_interrupted

    grid = tuner.fit()
    raise_if_interrupted(what)
    return grid
