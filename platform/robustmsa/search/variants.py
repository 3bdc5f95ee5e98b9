"""Train a fixed list of config variants as Tune trials of a study (no search, no pruning).

Used for what a study trains besides its searched trials: the late-fusion reference model
(the baseline of effective robustness) and the per-rate specialists and the one checkpoint of
the One-Checkpoint-for-All comparison. Each variant is a trial of the same `run_trial` (a
child MLflow run under the study's parent, tagged ``robustmsa.role``), finished by the same
`TrialRunFinisher` (validation spectrum, one test evaluation, checkpoint artifacts), so a
variant is logged exactly like a searched trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from robustmsa.errors import RobustMSAError
from robustmsa.search.trial import (
    VARIANT_KEY,
    FinishingTasks,
    StudyContext,
    TrialRunFinisher,
    checkpoint_directory,
    error_line,
    last_checkpoint,
    run_trial,
)
from robustmsa.training.checkpoint import load_state


@dataclass
class Variant:
    """``role`` names the variant (``reference``, ``rate-0.30``, ...); ``overrides`` are
    config key paths to values applied on top of the study config."""

    role: str
    overrides: dict[str, Any]


def run_variants(
    ctx: StudyContext,
    variants: list[Variant],
    *,
    name: str,
    resources: dict[str, float],
    finishing_resources: dict[str, float] | None = None,
    max_concurrent: int,
    reuse_actors: bool,
    reference_rows: list[dict] | None = None,
    finishing: FinishingTasks | None = None,
    evaluate_test: bool = True,
    started: float | None = None,
    trainable: str | None = None,
) -> dict[str, list[dict]]:
    """Train every variant to completion; returns ``{role: validation rows of its best
    epoch}``. ``resources``: each variant's trial bundle; ``finishing_resources``: what its
    finishing task holds (default: the same). Raises `RobustMSAError` naming the variants that
    failed. The variants' runs are finished (test evaluation included) when this returns,
    unless ``finishing`` is given: then their finishing tasks join it, for the caller to wait
    for. ``evaluate_test``: each variant's finishing task evaluates it once on the test split
    (a comparison reports every variant on test); off for a search study's reference model,
    which the study evaluates on test after its search (`robustmsa.search.study_evaluation`).
    ``started``: the study's start (``time.time()``), from which the console lines count.
    ``trainable``: the name under which the study registered `run_trial` with ``resources``
    (`robustmsa.search.study.register_trial`), for an experiment that runs beside another."""
    from ray import tune

    from robustmsa.search.console import ConsoleProgress
    from robustmsa.training.loop import OBJECTIVE

    roles = [v.role for v in variants]
    if len(set(roles)) != len(roles):
        raise ValueError(f"variant roles must be unique, got {roles}")
    tuner = tune.Tuner(
        trainable or tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), resources),
        param_space={
            VARIANT_KEY: tune.grid_search(
                [{"role": v.role, "overrides": v.overrides} for v in variants]
            )
        },
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent,
            reuse_actors=reuse_actors,
            trial_name_creator=lambda t: f"{name}_{t.trial_id}",
            trial_dirname_creator=lambda t: f"{name}_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=f"{name}-{ctx.parent_run_id[:8]}",
            storage_path=ctx.storage_path,
            callbacks=[
                ConsoleProgress(
                    len(variants), ctx.base["training"]["epochs"], OBJECTIVE, name, started
                ),
                TrialRunFinisher(
                    ctx.tracking_uri,
                    ctx.experiment_id,
                    reference_rows,
                    finishing_resources or resources,
                    finishing,
                    storage_path=ctx.storage_path,
                    evaluate_test=evaluate_test,
                ),
            ],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    rows: dict[str, list[dict]] = {}
    failed = []
    for result in tuner.fit():
        role = (result.config or {})[VARIANT_KEY]["role"]
        found = last_checkpoint(result.checkpoint, result.metrics, ctx.storage_path)
        with checkpoint_directory(found) as local:
            if result.error or local is None:
                why = error_line(result.error) if result.error else "no checkpoint"
                failed.append(f"{role}: {why}")
                continue
            rows[role] = load_state(local)[1]
    if failed:
        raise RobustMSAError(f"{name}: variants failed ({'; '.join(failed)})")
    return {role: rows[role] for role in roles}
