"""Run the training loop for one config: in-process, or through a Ray Train ``TorchTrainer``.

``in_process`` runs `run_training` in the calling process (a Tune trial or a plain script);
``torch_trainer`` starts ``num_workers`` Ray Train workers (gloo on CPU, NCCL on GPU, DDP when
more than one). ``auto`` picks in-process for single-worker trials: the fixed per-trial cost of a
``TorchTrainer`` (actors, process group, shutdown) is measured by
``benchmarks/trial_overhead.py`` and dominates small trials.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import torch

from robustmsa.config import StudyConfig, from_dict
from robustmsa.training.checkpoint import (
    ResumePoint,
    load_resume_point,
    load_state,
    load_weights,
)
from robustmsa.training.loop import TrainingOutcome, run_training
from robustmsa.training.reporting import LocalReporter, Sink, TrainReporter, TuneReporter


def resolve_backend(config: StudyConfig) -> str:
    t = config.training
    if t.backend != "auto":
        return t.backend
    return "in_process" if t.num_workers == 1 else "torch_trainer"


def gpus_per_worker(config: StudyConfig) -> float:
    """GPUs one training worker holds: ``study.gpus_per_trial`` (a fraction shares a GPU),
    by default 1 with ``training.use_gpu`` and 0 without."""
    gpus = config.study.gpus_per_trial
    if gpus is None:
        return 1.0 if config.training.use_gpu else 0.0
    return float(gpus)


def _local_device(config: StudyConfig) -> torch.device:
    return torch.device("cuda" if config.training.use_gpu and torch.cuda.is_available() else "cpu")


def _train_worker(loop_config: dict) -> None:
    """The per-worker entry of the ``TorchTrainer``: the shared loop with DDP wrapping."""
    import ray.train
    import ray.train.torch

    config = from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    # A restarted worker group (a worker or node lost) continues from the last checkpoint.
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as local:
            resume = load_resume_point(local)

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        # Top-k routing leaves some experts without gradient in a step: DDP must allow that.
        kwargs = {"find_unused_parameters": True} if world > 1 else {}
        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=kwargs)

    run_training(
        config,
        TrainReporter(sinks=loop_config["sinks"]),
        device=ray.train.torch.get_device(),
        rank=ctx.get_world_rank(),
        world_size=world,
        wrap_model=wrap,
        resume=resume,
    )


def fit(
    config: StudyConfig,
    *,
    sinks: list[Sink] | None = None,
    in_tune: bool = False,
    storage_path: str | Path | None = None,
    resume: ResumePoint | None = None,
    run_name: str | None = None,
) -> TrainingOutcome:
    """Train ``config`` by its backend and return the outcome (best epoch, spectrum, weights).

    ``resume``: continue in-process training from this checkpoint (a restarted trial).
    ``run_name``: the ``TorchTrainer`` run's name under ``storage_path``; a trial passes one
    of its own, so that its restart continues that run from its last checkpoint (docs/
    stack.md: a reused name resumes); None: a fresh name. A ``TorchTrainer`` restarts a lost
    worker group up to ``study.max_failures`` times."""
    sinks = list(sinks or [])
    if resolve_backend(config) == "in_process":
        reporter = TuneReporter(sinks) if in_tune else LocalReporter(sinks)
        return run_training(config, reporter, device=_local_device(config), resume=resume)

    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    callbacks = []
    if in_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    t = config.training
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"config": config.to_dict(), "sinks": sinks},
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.use_gpu,
            # Each worker's share, as the study's resource plan counts it
            # (robustmsa.search.resources).
            resources_per_worker={
                "CPU": config.study.cpus_per_trial,
                **({"GPU": gpus_per_worker(config)} if t.use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            # A reused name resumes that run (docs/stack.md): a fit outside a trial gets its own.
            name=run_name or f"{config.name}-{uuid.uuid4().hex[:8]}",
            storage_path=str(storage_path) if storage_path else None,
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=config.study.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {config.name} reported no checkpoint")
    with result.checkpoint.as_directory() as ckpt:
        state, rows = load_state(ckpt)
        best_state = load_weights(ckpt, best=True)
    return TrainingOutcome(
        best_epoch=state["best_epoch"],
        best_score=state["best_score"],
        epochs_run=state["epoch"],
        stopped_early=state["epoch"] < t.epochs,
        rows=rows,
        best_state=best_state,
    )
