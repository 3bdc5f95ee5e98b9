"""The one place that builds Ray Tune's `Tuner` for a study's experiments.

A search (Optuna's sampler, ASHA) and a list of fixed variants (the reference model, per-rate
specialists, compared models, confirmation seeds) differ only in their search algorithm,
scheduler and parameter space; the rest is the study's: the experiment's name under its storage
path, the console and finishing callbacks, one checkpoint kept, Tune's own output off.
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
):
    """A `tune.Tuner` for the registered ``trainable``; trials are named (and their
    directories) ``<trial_prefix>_<trial id>``.

    ``reuse_actors``: a trial process imports torch and MLflow (about 5 s on 2 cores), so
    in-process trials reuse a finished trial's actor (benchmarks/trial_overhead.py); not with a
    TorchTrainer, whose stopped trial's thread outlives Tune's reset timeout while Train shuts
    down (reuse then stalled a study here)."""
    from ray import tune

    def trial_name(trial) -> str:
        return f"{trial_prefix}_{trial.trial_id}"

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
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
