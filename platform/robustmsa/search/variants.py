"""Train a fixed list of config variants as Tune trials of a study (no search, no pruning).

Used for what a study trains besides its searched trials: the late-fusion reference model
(the baseline of effective robustness) and the per-rate specialists and the one checkpoint of
the One-Checkpoint-for-All comparison. Each variant is a trial of the same `run_trial` (a
child MLflow run under the study's parent, tagged ``robustmsa.role``), finished by the same
`TrialRunFinisher` (validation spectrum, one test evaluation, checkpoint artifacts), so a
variant is logged exactly like a searched trial.
"""

from __future__ import annotations

from robustmsa.errors import RobustMSAError
from robustmsa.search.kinds.base import Variant
from robustmsa.search.trial import (
    VARIANT_KEY,
    FinishingTasks,
    StudyContext,
    TrialRunFinisher,
    checkpoint_directory,
    error_line,
    last_checkpoint,
)
from robustmsa.training.checkpoint import load_state


def run_variants(
    ctx: StudyContext,
    variants: list[Variant],
    *,
    name: str,
    trainable: str,
    finishing_resources: dict[str, float],
    max_concurrent: int,
    reuse_actors: bool,
    reference_rows: list[dict] | None = None,
    finishing: FinishingTasks | None = None,
    evaluate_test: bool = True,
    started: float | None = None,
) -> dict[str, list[dict]]:
    """Train every variant to completion; returns ``{role: validation rows of its best
    epoch}``. ``trainable``: the name under which the study registered `run_trial` with the
    trial's resources (`robustmsa.search.study.register_trial`); ``finishing_resources``: what
    each variant's finishing task holds. Raises `RobustMSAError` naming the variants that
    failed. The variants' runs are finished (test evaluation included) when this returns,
    unless ``finishing`` is given: then their finishing tasks join it, for the caller to wait
    for. ``evaluate_test``: each variant's finishing task evaluates it once on the test split
    (a comparison reports every variant on test); off for a search study's reference model,
    which the study evaluates on test after its search (`robustmsa.search.study_evaluation`).
    ``started``: the study's start (``time.time()``), from which the console lines count."""
    from ray import tune

    from robustmsa.search.console import ConsoleProgress
    from robustmsa.search.tuner import build_tuner, fit
    from robustmsa.training.loop import OBJECTIVE

    roles = [v.role for v in variants]
    if len(set(roles)) != len(roles):
        raise ValueError(f"variant roles must be unique, got {roles}")
    finisher = TrialRunFinisher(
        ctx.tracking_uri,
        ctx.experiment_id,
        reference_rows,
        finishing_resources,
        finishing,
        storage_path=ctx.storage_path,
        evaluate_test=evaluate_test,
    )
    tuner = build_tuner(
        trainable,
        name=f"{name}-{ctx.parent_run_id[:8]}",
        storage_path=ctx.storage_path,
        param_space={
            VARIANT_KEY: tune.grid_search(
                [{"role": v.role, "overrides": v.overrides} for v in variants]
            )
        },
        callbacks=[
            ConsoleProgress(
                len(variants), ctx.base["training"]["epochs"], OBJECTIVE, name, started
            ),
            finisher,
        ],
        max_concurrent=max_concurrent,
        reuse_actors=reuse_actors,
        trial_prefix=name,
        max_failures=ctx.base["study"]["max_failures"],
    )
    rows: dict[str, list[dict]] = {}
    failed = []
    grid = fit(tuner, f"the {name} runs")
    # A resumed study: variants Tune had finished before the study stopped; their runs end now.
    finisher.finish_leftovers(grid)
    if finishing is None:
        finisher.tasks.wait()
    for result in grid:
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
