"""Run a hyperparameter study: Ray Tune + Optuna (seeded TPE) + ASHA, tracked in MLflow.

The driver creates the study's parent MLflow run; each Tune trial (`search.trial.run_trial`)
opens a nested child run and trains through `training.trainer.fit` (in-process or a
``TorchTrainer``); a driver-side Tune callback submits one Ray task per trial that ends its child
run (validation spectrum, the one test evaluation of a completed trial, figures,
`search.trial.TrialRunFinisher`); the driver waits for those tasks and then ends any run still
RUNNING before it returns, however the study ends.

Objective: ``best/val/spectrum_score`` (the best-so-far validation spectrum score, see
`robustmsa.evaluation.summaries.spectrum_score`), minimised; ASHA compares trials on it per epoch.

Beside the search, the study trains its reference model (``search.reference_model``, late
fusion by default; a child run tagged ``robustmsa.role = reference``) as a Tune experiment of
its own in a driver thread, and every completed trial's run gets its effective robustness
against that model's validation curves (its finishing waits for them). Comparison studies
train the reference first.

What is evaluated beyond each epoch's validation follows ``evaluation.test_policy``
(`robustmsa.search.study_evaluation`): the oracle once per split on the parent (computed beside
the reference's training), the test split once, after the search, for the selected trial and
the reference, and figures for those two only. The parent run also holds the study's summary:
the best score, the reference's and the oracle's scores, the trials table and
``best_config.yaml``.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustmsa.config import StudyConfig, from_dict
from robustmsa.data.remote import check_storage, is_uri
from robustmsa.data.source import dataset_dir
from robustmsa.errors import RobustMSAError
from robustmsa.training.loop import OBJECTIVE

SEARCH_METRIC = "best/" + OBJECTIVE


@dataclass
class StudyResult:
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    storage_path: str
    trials: list[dict] = field(default_factory=list)
    best: dict | None = None
    best_config: dict | None = None
    comparison: list[dict] | None = None  # search.kind per_rate, one_checkpoint_for_all, ...
    code: dict[str, str] | None = None  # robustmsa.provenance.code_identity of the driver
    max_concurrent: int | None = None  # search.max_concurrent, resolved
    reference: dict | None = None  # {"run_id", "model", "score"}: the reference model's run
    oracle_score: float | None = None  # the oracle's validation spectrum score (synthetic data)
    selected_run_id: str | None = None  # the run of the trial selected on validation
    wall_s: float = 0.0


# ---------------------------------------------------------------------------------------------
# Driver-side preparation


def absolutize(config: StudyConfig, root: Path) -> dict[str, Any]:
    """The config as a dict with every local path made absolute (trials run in other dirs)."""
    raw = config.to_dict()
    data = raw["data"]
    data["cache_dir"] = str((root / data["cache_dir"]).resolve())
    if data["path"] and not is_uri(data["path"]):
        data["path"] = str((root / data["path"]).resolve())
    storage = raw["search"]["storage_path"] or ".robustmsa/ray_results"
    if not is_uri(storage):
        storage = str((root / storage).resolve())
    raw["search"]["storage_path"] = storage
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


def _trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


REFERENCE_ROLE = "reference"


def reference_variant(model_name: str):
    """The study's reference model: ``model_name`` at its default parameters, with the
    study's data, training and spectrum settings (the baseline of effective robustness)."""
    from robustmsa.search.variants import Variant

    # No search space: the study's space names the searched model's parameters.
    return Variant(
        REFERENCE_ROLE, {"model.name": model_name, "model.params": {}, "search.space": []}
    )


def _compare(
    config: StudyConfig,
    ctx,
    data_root: Path,
    plan,
    max_concurrent: int,
    in_process: bool,
    reference_rows: list[dict] | None,
    client,
    parent: str,
) -> list[dict]:
    """Train the per-rate specialists (and the one checkpoint), log the comparison table to
    the parent run and return it (`robustmsa.search.comparison`)."""
    from robustmsa.data.parquet import open_dataset
    from robustmsa.evaluation.ceiling import oracle_rows
    from robustmsa.evaluation.spectrum import SpectrumEvaluator
    from robustmsa.search.comparison import comparison_table, comparison_variants, log_comparison
    from robustmsa.search.variants import run_variants
    from robustmsa.spectrum import build_points

    s = config.search
    variants = comparison_variants(config)
    rows = run_variants(
        ctx,
        variants,
        name=s.kind,
        resources=plan.trial,
        finishing_resources=plan.finishing,
        max_concurrent=max_concurrent,
        reuse_actors=in_process,
        reference_rows=reference_rows,
    )
    valid = open_dataset(data_root, frame_cache=Path(ctx.base["data"]["cache_dir"]) / "frames")
    evaluator = SpectrumEvaluator(
        valid["valid"],
        build_points([f"{s.per_rate_axis}@all"], levels=s.levels),
        seed=config.spectrum.eval_seed,
    )
    table = comparison_table(rows, s.per_rate_axis, s.levels, oracle_rows(evaluator))
    log_comparison(client, parent, table, s.per_rate_axis)
    return table


def _compare_models(
    config: StudyConfig,
    ctx,
    data_root: Path,
    plan,
    max_concurrent: int,
    in_process: bool,
    reference_rows: list[dict] | None,
    client,
    parent: str,
) -> list[dict]:
    """Train every ``search.models`` entry, log the comparison of all of them (and of the
    reference) on both splits to the parent run and return its table
    (`robustmsa.search.model_comparison`)."""
    from robustmsa.data.parquet import open_dataset
    from robustmsa.evaluation.ceiling import oracle_rows
    from robustmsa.evaluation.spectrum import SpectrumEvaluator
    from robustmsa.search.model_comparison import (
        ORACLE,
        comparison_table,
        log_model_comparison,
        logged_test_rows,
        model_variants,
        point_rows,
    )
    from robustmsa.search.variants import run_variants
    from robustmsa.spectrum import build_points

    s = config.search
    protocols = config.spectrum.protocols
    valid = run_variants(
        ctx,
        model_variants(config),
        name=s.kind,
        resources=plan.trial,
        finishing_resources=plan.finishing,
        max_concurrent=max_concurrent,
        reuse_actors=in_process,
        reference_rows=reference_rows,
    )
    if reference_rows is not None:
        valid = {REFERENCE_ROLE: reference_rows, **valid}
    test = logged_test_rows(client, ctx.experiment_id, parent, list(valid))
    dataset = open_dataset(data_root, frame_cache=Path(ctx.base["data"]["cache_dir"]) / "frames")
    table, by_split = [], {}
    for split, by_model in (("valid", valid), ("test", test)):
        by_model = {m: point_rows(rows, protocols) for m, rows in by_model.items()}
        evaluator = SpectrumEvaluator(
            dataset[split], build_points(protocols), seed=config.spectrum.eval_seed
        )
        oracle = oracle_rows(evaluator)
        table += comparison_table(by_model, split, oracle)
        by_split[split] = {**by_model, **({ORACLE: oracle} if oracle else {})}
    log_model_comparison(client, parent, table, by_split)
    return table


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


TRIALS_TABLE = "tables/study_trials.json"


def log_study_summary(client, parent_run_id: str, result: StudyResult) -> None:
    """The study's summary on its parent run: the selected trial's score (``best/...``), the
    reference's and the oracle's validation spectrum scores (``reference/...``, ``oracle/...``),
    the selected and reference run ids as tags, and one row per trial (``tables/
    study_trials.json``: id, run, outcome, score, epochs, the searched parameters)."""
    import pandas as pd

    from robustmsa.tracking.runs import log_metrics, set_tags

    metrics = [(SEARCH_METRIC, result.best["score"], 0)]
    tags = {"robustmsa.best_trial": result.best["trial_id"]}
    tags["robustmsa.selected_run_id"] = result.selected_run_id
    if result.reference:
        metrics.append((f"reference/{OBJECTIVE}", result.reference["score"], 0))
        tags["robustmsa.reference_run_id"] = result.reference["run_id"]
    if result.oracle_score is not None:
        metrics.append((f"oracle/{OBJECTIVE}", result.oracle_score, 0))
    log_metrics(client, parent_run_id, metrics)
    set_tags(client, parent_run_id, tags)
    rows = [
        {k: t.get(k) for k in ("trial_id", "run_id", "outcome", "score", "epochs")} | t["params"]
        for t in result.trials
    ]
    client.log_table(parent_run_id, pd.DataFrame(rows).astype(object), TRIALS_TABLE)


def run_study(config: StudyConfig, root: Path | str = ".") -> StudyResult:
    """Run the search of ``config``; everything relative resolves against ``root``."""
    import ray
    from mlflow.tracking import MlflowClient
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from robustmsa.evaluation.summaries import spectrum_score
    from robustmsa.provenance import code_identity, code_tags, describe
    from robustmsa.search.console import ConsoleProgress
    from robustmsa.search.resources import (
        cluster_capacity,
        resolve_max_concurrent,
        trial_resources,
    )
    from robustmsa.search.space import define_by_run
    from robustmsa.search.study_evaluation import present_runs, start_oracle
    from robustmsa.search.trial import (
        ROLE_TAG,
        FinishingTasks,
        StudyContext,
        TrialRunFinisher,
    )
    from robustmsa.search.variants import run_variants
    from robustmsa.tracking.dataset import log_dataset_input
    from robustmsa.tracking.runs import (
        STUDY_TAG,
        check_reachable,
        end_dangling_runs,
        ensure_experiment,
        flatten,
        log_params,
        resolve_tracking_uri,
        start_run,
    )
    from robustmsa.training.trainer import resolve_backend

    started = time.time()
    # Per-epoch checkpoints with num_to_keep=1 trip a noisy Tune warning on every report.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    root = Path(root).resolve()
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
    check_reachable(uri)
    base = absolutize(config, root)
    check_storage(base["search"]["storage_path"])
    d = base["data"]
    # Fails now, before any run exists, when the dataset is missing; makes synthetic data.
    data_root = dataset_dir(
        d["source"], path=d["path"], preset=d["preset"], seed=d["seed"], cache_dir=d["cache_dir"]
    )
    s = config.search
    in_process = resolve_backend(config) == "in_process"
    plan = trial_resources(config, in_process)
    if s.max_concurrent != "auto":
        # Locally, size the logical CPUs so that max_concurrent trials fit (docs/stack.md).
        init_ray(math.ceil(s.max_concurrent * plan.footprint().get("CPU", 1)))
    else:
        init_ray()
    # Fails now, before any run exists, when no trial could ever be scheduled.
    max_concurrent = resolve_max_concurrent(config, plan, cluster_capacity())
    identity = code_identity()
    print(f"Study {config.name}: {describe()}; up to {max_concurrent} trials at once", flush=True)
    client = MlflowClient(uri)
    local_store = not uri.startswith(("http://", "https://", "databricks"))
    experiment_id = ensure_experiment(
        client, config.tracking.experiment, root / "mlartifacts" if local_store else None
    )
    parent = start_run(
        client, experiment_id, config.name, tags={STUDY_TAG: config.name, **code_tags()}
    )
    result = StudyResult(parent, experiment_id, uri, base["search"]["storage_path"])
    result.code = identity
    result.max_concurrent = max_concurrent
    # Every trial run's finishing task (test evaluation, figures), awaited before the end.
    finishing = FinishingTasks(uri)
    oracle = None  # the oracle task's ObjectRef (search studies)
    # The reference model's training beside the search (search studies).
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robustmsa-reference")
    status = "FAILED"
    try:
        log_params(client, parent, flatten(base))
        log_params(client, parent, {"search.resolved_max_concurrent": max_concurrent})
        log_dataset_input(client, parent, data_root, context="study")
        ctx = StudyContext(base, uri, experiment_id, parent, result.storage_path)
        resources = plan.trial
        test_in_finishing = s.kind != "search" or config.evaluation.test_policy == "completed"
        if s.kind == "search":
            # Beside the reference's training: the one computation of the study's ceiling.
            oracle = start_oracle(uri, parent, base, plan.finishing)
        reference_rows = None
        trainable = register_trial(ctx, resources) if s.kind == "search" else None
        if s.reference_model:

            def train_reference() -> list[dict]:
                return run_variants(
                    ctx,
                    [reference_variant(s.reference_model)],
                    name="reference",
                    resources=resources,
                    finishing_resources=plan.finishing,
                    max_concurrent=1,
                    reuse_actors=in_process,
                    finishing=finishing,  # its finishing overlaps what follows
                    evaluate_test=test_in_finishing,
                    started=started,
                    trainable=trainable,
                )[REFERENCE_ROLE]

            if s.kind == "search":
                # Beside the search, as its own Tune experiment in a driver thread: it holds a
                # trial's resources like any trial, so the search starts with what is left.
                # Completed trials' finishing waits for its rows (effective robustness).
                reference_rows = background.submit(train_reference)
            else:
                # The comparisons compare with it: trained first.
                reference_rows = train_reference()
        if s.kind != "search":
            finishing.wait()  # the comparisons read the reference's logged test rows
            compare = _compare_models if s.kind == "compare_models" else _compare
            result.comparison = compare(
                config, ctx, data_root, plan, max_concurrent, in_process, reference_rows,
                client, parent,
            )  # fmt: skip
            status = "FINISHED"
            return result
        finisher = TrialRunFinisher(
            uri,
            experiment_id,
            reference_rows,
            plan.finishing,
            finishing,
            storage_path=result.storage_path,
            evaluate_test=test_in_finishing,
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=SEARCH_METRIC,
                mode="min",
                search_alg=OptunaSearch(
                    space=define_by_run(s.space),
                    metric=SEARCH_METRIC,
                    mode="min",
                    sampler=TPESampler(seed=s.seed),
                ),
                scheduler=ASHAScheduler(
                    time_attr="training_iteration",
                    max_t=max(config.training.epochs, 1),
                    grace_period=min(s.grace_period, max(config.training.epochs, 1)),
                    reduction_factor=s.reduction_factor,
                ),
                num_samples=s.num_samples,
                max_concurrent_trials=max_concurrent,
                # A trial process imports torch and MLflow (about 5 s on 2 cores): reusing the
                # actor for the next trial saves that per trial (benchmarks/trial_overhead.py).
                # Not with a TorchTrainer: a stopped trial's thread outlives Tune's reset
                # timeout while Train shuts down, and reuse then stalled the study here.
                reuse_actors=in_process,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=f"{config.name}-{parent[:8]}",
                storage_path=result.storage_path,
                callbacks=[
                    ConsoleProgress(
                        s.num_samples, config.training.epochs, OBJECTIVE, "trial", started
                    ),
                    finisher,
                ],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=0,
            ),
        )
        grid = tuner.fit()
        if isinstance(reference_rows, Future):
            reference_rows = reference_rows.result()  # raises when the reference failed
        finisher.submit_held()
        finishing.wait()
        for r in grid:
            row = {
                "trial_id": r.metrics.get("trial_id") if r.metrics else None,
                "params": {k: v for k, v in (r.config or {}).items()},
                "score": (r.metrics or {}).get(SEARCH_METRIC),
                "epochs": (r.metrics or {}).get("epoch"),
                "error": str(r.error).splitlines()[0] if r.error else None,
            }
            result.trials.append(row)
        scored = [t for t in result.trials if t["score"] is not None and not t["error"]]
        if not scored:
            errors = [t["error"] for t in result.trials if t["error"]]
            raise RobustMSAError(f"study {config.name}: no trial finished ({errors[:1]})")
        result.best = min(scored, key=lambda t: t["score"])
        result.best_config = from_dict(base, result.best["params"]).to_dict()
        runs = child_runs(client, experiment_id, parent)
        for t in result.trials:
            run = runs.get(t["trial_id"])
            t["run_id"] = run.info.run_id if run else None
            t["outcome"] = run.data.tags.get("robustmsa.outcome") if run else None
        result.selected_run_id = result.best["run_id"]
        presented = [result.selected_run_id]
        if reference_rows is not None:
            run = next(r for r in runs.values() if r.data.tags.get(ROLE_TAG) == REFERENCE_ROLE)
            result.reference = {
                "run_id": run.info.run_id,
                "model": s.reference_model,
                "score": spectrum_score(reference_rows),
            }
            presented.append(run.info.run_id)
        failed = present_runs(uri, presented, oracle, plan.finishing)
        oracle_found = ray.get(oracle)
        if oracle_found:
            result.oracle_score = spectrum_score(oracle_found["valid"])
        log_study_summary(client, parent, result)
        client.log_text(
            parent, yaml.safe_dump(result.best_config, sort_keys=False), "best_config.yaml"
        )
        if failed:
            why = "; ".join(failed)
            raise RobustMSAError(f"study {config.name}: presenting runs failed: {why}")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        # A search that failed while the reference trains: that experiment ends by itself.
        background.shutdown(wait=True, cancel_futures=True)
        finishing.cancel()  # only what a failing or interrupted study left unawaited
        if oracle is not None and status != "FINISHED":
            ray.cancel(oracle)
        end_dangling_runs(client, experiment_id, parent)
        client.set_terminated(parent, status)
        result.wall_s = time.time() - started
    return result
