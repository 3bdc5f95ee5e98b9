"""The one per-worker training loop (plain PyTorch), shared by every path that trains a model.

Per epoch: shuffle (seeded by ``training.seed`` and the epoch), shard by rank, corrupt each batch
with the training-time sampler, minimise `task_loss` (an L1) ``+ sum_k w_k * aux_k``, then
evaluate the validation spectrum; its `spectrum_score` is the objective of early stopping and
of the search. Every epoch writes a checkpoint and reports; the best epoch's weights and
validation spectrum travel in every checkpoint, so the last one holds the trial's outcome.

Multi-stage training (a general hook; models without it train exactly as above): a model may
define ``training_stages() -> list[stage]`` and ``set_stage(name)``. A stage (duck-typed; see
`robustmsa.models.base.Stage`) has ``name``, ``fraction`` (share of ``training.epochs``) or
``epochs`` (a count; the last stage may give neither and takes the rest), ``sampler`` (None: the
study's training sampler; ``"complete"``: no corruption; or a `SpectrumSampler`), ``train``
(parameter-name prefixes the stage optimises; None: all) and ``select`` (whether its epochs may
become the best epoch; the last stage must). `plan_stages` turns them into epoch counts (the last
stage gets at least one epoch when ``training.epochs > 0``). The stages run in order through the
same epoch code: on entering a stage the loop calls ``set_stage(name)`` and builds a fresh
optimizer (same ``lr``/``weight_decay``) over the stage's parameters; every gradient is cleared
each step and only the stage's parameters are clipped and stepped. Epoch numbers continue across
stages; each report carries ``stage`` (the name) and the checkpoint state too; early stopping
(``patience``) counts only in the last stage. An empty list means a single-stage model. A
zero-epoch run validates once in the last stage.

Weight averaging (``training.weight_average``, `robustmsa.training.weight_average`): every epoch
is validated, selected and checkpointed as best with a moving average of the parameters; the raw
parameters, the optimizer and the average itself are what a resume continues from.

Learning rate (``training.lr_schedule``, `robustmsa.training.lr_schedule`): ``constant`` trains
at ``training.lr``; ``cosine`` anneals it over each stage's planned epochs, set before every step
from the step's place in its stage (nothing to save: a resume sets the same rates). Every
report carries ``train/lr``, the rate of the epoch's first step.

Precision (``training.precision``): ``bf16`` runs each training forward under
``torch.autocast(<device type>, bfloat16)`` (on a GPU the fast path; CPU autocast takes the
same code and is what the tests run); the losses are taken in float32, the weights, gradients
and optimizer state stay float32, and every evaluation (validation, test, ``robustmsa
evaluate``) runs in float32, so the tables of a bf16 run are re-evaluable exactly like others.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from robustmsa.config import StudyConfig
from robustmsa.data.parquet import ParquetSplit, open_dataset
from robustmsa.data.source import dataset_dir
from robustmsa.evaluation.spectrum import SpectrumEvaluator, merge_predictions
from robustmsa.evaluation.summaries import spectrum_score
from robustmsa.models import MODELS
from robustmsa.models.base import ModelOutput, MSAModel
from robustmsa.spectrum import SpectrumSampler, build_points, build_sampler
from robustmsa.spectrum.sampler import FixedSampler
from robustmsa.training.checkpoint import ResumePoint, save_checkpoint
from robustmsa.training.lr_schedule import epoch_rates
from robustmsa.training.weight_average import WeightAverage

# training.precision -> the autocast dtype of the training forward (None: plain float32).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
# Wall-clock metrics (``time/epoch_s``): measurements of this run, not results; the same config
# and seed give the same numbers outside this prefix.
TIMING_PREFIX = "time/"
OBJECTIVE = "val/spectrum_score"  # minimised; defined in evaluation.summaries.spectrum_score


class Reporter(Protocol):
    def report(self, metrics: dict, checkpoint_dir: str | None) -> None: ...


@dataclass
class TrainingOutcome:
    """What a finished training run hands back: the best epoch and its validation spectrum."""

    best_epoch: int
    best_score: float
    epochs_run: int
    stopped_early: bool
    rows: list[dict] = field(default_factory=list)
    best_state: dict | None = None


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def generator_states(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """This rank's random generators as `ResumePoint.rng` keeps them (the numpy global
    generator is seeded but never drawn from, so it is not kept)."""
    states = {"generator": generator.get_state(), "cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def restore_generators(
    states: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device
) -> None:
    """Put back what `generator_states` kept."""
    generator.set_state(states["generator"])
    torch.set_rng_state(states["cpu"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def build_model(config: StudyConfig, dims: dict[str, int]) -> MSAModel:
    """The model named by ``config.model.name`` with its validated params."""
    return MODELS[config.model.name].build(config.model_params(), dims)


def weights_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A fresh CPU copy of ``model``'s state dict."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _unwrap(model: nn.Module) -> MSAModel:
    return getattr(model, "module", model)


def training_stages(model: MSAModel) -> list:
    """The model's training stages (`training_stages()`), or [] for a single-stage model."""
    stages = getattr(model, "training_stages", None)
    return list(stages()) if stages is not None else []


def plan_stages(stages: list, epochs: int) -> list[tuple[object, int]]:
    """``[(stage, number of epochs)]`` for ``training.epochs = epochs`` (module docstring).

    ``fraction`` stages get ``floor(fraction * epochs + 0.5)``, capped so that the last stage
    keeps one epoch; explicit ``epochs`` are taken as given; a zero-epoch run plans 0 each.
    ValueError (naming the stage) for duplicate names, a non-selectable last stage, a stage
    with both or (not last) neither of ``fraction`` and ``epochs``, or values out of range.
    """
    if not stages:
        return []
    plan: list[tuple[object, int]] = []
    used = 0
    names = [s.name for s in stages]
    for i, s in enumerate(stages):
        where = f"stage {s.name!r}"
        last = i == len(stages) - 1
        if names.count(s.name) > 1:
            raise ValueError(f"{where}: the name is used twice")
        if s.fraction is not None and s.epochs is not None:
            raise ValueError(f"{where}: give fraction or epochs, not both")
        if s.epochs is not None:
            if s.epochs < 0:
                raise ValueError(f"{where}: epochs must be >= 0, got {s.epochs}")
            n = s.epochs
        elif s.fraction is not None:
            if not 0.0 <= s.fraction <= 1.0:
                raise ValueError(f"{where}: fraction must be in [0, 1], got {s.fraction}")
            n = int(np.floor(s.fraction * epochs + 0.5))
            if not last:
                n = min(n, max(epochs - 1 - used, 0))
        elif last:
            n = max(epochs - used, 0)
        else:
            raise ValueError(f"{where}: needs fraction or epochs (only the last takes the rest)")
        if last:
            if not s.select:
                raise ValueError(f"{where}: the last stage must have select=True")
            if epochs > 0:
                n = max(n, 1)
        if epochs == 0:
            n = 0
        plan.append((s, n))
        used += n
    return plan


def stage_parameters(model: MSAModel, stage) -> list[nn.Parameter]:
    """The parameters ``stage`` optimises: names equal to or under a ``stage.train`` prefix."""
    if stage.train is None:
        return list(model.parameters())
    prefixes = tuple(stage.train)
    chosen = [
        p
        for n, p in model.named_parameters()
        if any(n == q or n.startswith(q + ".") for q in prefixes)
    ]
    if not chosen:
        raise ValueError(f"stage {stage.name!r}: train={list(prefixes)} matches no parameter")
    return chosen


def stage_sampler(stage, default: SpectrumSampler) -> SpectrumSampler:
    """The training sampler of ``stage``: the study's, none (``"complete"``) or its own."""
    if stage.sampler is None:
        return default
    if isinstance(stage.sampler, SpectrumSampler):
        return stage.sampler
    if stage.sampler == "complete":
        return FixedSampler(0.0, 0.0)  # every sample at (λ, η) = (0, 0): the data as stored
    raise ValueError(
        f"stage {stage.name!r}: sampler must be None, 'complete' or a SpectrumSampler, "
        f"got {stage.sampler!r}"
    )


def task_loss(out: ModelOutput, labels: torch.Tensor, model: MSAModel) -> torch.Tensor:
    """The L1 task loss of ``out`` against ``labels`` (B,, label units), in the units the model
    learns (`MSAModel`), each sample's error times ``out.task_weight`` when the model gives one.

    Affine targets: the label-unit error of ``out.prediction`` divided by ``target_std`` (the
    standardised error, computed as it was before the normal-score link existed, so that such
    runs keep their numbers). Normal-score link: the error of ``out.standardised_prediction``
    against the labels' normal scores. The flag is read with ``torch.where``: no step waits on it.
    """
    error = (out.prediction.float() - labels).abs()
    if out.task_weight is not None:
        error = error * out.task_weight.float()
    affine = error.mean() / model.target_std
    if out.standardised_prediction is None:
        return affine
    score_error = (out.standardised_prediction.float() - model.to_standardised(labels)).abs()
    if out.task_weight is not None:
        score_error = score_error * out.task_weight.float()
    return torch.where(model.target_normal_score, score_error.mean(), affine)


def train_epoch(
    model: nn.Module,
    split: ParquetSplit,
    order: np.ndarray,
    *,
    optimizer: torch.optim.Optimizer,
    sampler: SpectrumSampler,
    generator: torch.Generator,
    batch_size: int,
    grad_clip: float,
    device: torch.device,
    parameters: list[nn.Parameter] | None = None,
    autocast: torch.dtype | None = None,
    after_step: Callable[[], None] | None = None,
    rate_at: Callable[[float], float] | None = None,
) -> dict[str, float]:
    """One pass over ``order``: mean ``train/loss``, ``train/task_loss``, ``train/aux/*`` and
    ``train/monitor/*`` (`ModelOutput.monitors`).

    ``parameters``: the ones ``optimizer`` steps (a training stage's): every gradient of the
    model is then cleared each step and only these are clipped. None: all of the model's.
    ``autocast``: the forward runs under ``torch.autocast(device.type, autocast)`` (bf16);
    the losses are taken in float32 and the weights stay float32. ``after_step``: called after
    every optimizer step (the weight average's update). ``rate_at``: the learning rate of each
    step from the share of the epoch done before it (`robustmsa.training.lr_schedule`), set on
    every parameter group before the step; None leaves the optimizer's rate as it is. The
    result's ``train/lr`` is the rate of the epoch's first step.
    """
    inner = _unwrap(model)
    weights = inner.aux_loss_weights()
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    n_steps = -(-len(order) // batch_size)
    first_rate = optimizer.param_groups[0]["lr"] if rate_at is None else rate_at(0.0)
    for start in range(0, len(order), batch_size):
        if rate_at is not None:
            rate = rate_at(steps / n_steps)
            for group in optimizer.param_groups:
                group["lr"] = rate
        batch = sampler(split.batch(order[start : start + batch_size]), generator).to(device)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            out = model(batch)
        task = task_loss(out, batch.labels, inner)
        loss = task + sum(weights.get(k, 0.0) * v.float() for k, v in out.aux_losses.items())
        if parameters is None:
            optimizer.zero_grad(set_to_none=True)
        else:
            model.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(
                model.parameters() if parameters is None else parameters, grad_clip
            )
        optimizer.step()
        if after_step is not None:
            after_step()
        parts = {"train/loss": loss, "train/task_loss": task}
        parts.update({f"train/aux/{k}": v for k, v in out.aux_losses.items()})
        parts.update({f"train/monitor/{k}": v for k, v in out.monitors.items()})
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        steps += 1
    return {k: v / max(steps, 1) for k, v in sums.items()} | {"train/lr": float(first_rate)}


def run_training(
    config: StudyConfig,
    reporter: Reporter,
    *,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    resume: ResumePoint | None = None,
) -> TrainingOutcome:
    """Train ``config``'s model on its dataset; report every epoch; return the best epoch.

    ``wrap_model`` is Ray Train's ``prepare_model`` under DDP (it moves the model to the
    worker's device). Under DDP each rank predicts its share of the validation rows and the
    shares are gathered, so every rank computes the same table (identical to one worker's) and
    takes the same early-stopping decision.

    ``resume``: the run's last checkpoint (`load_resume_point`): training continues at the
    epoch after it with its weights, optimizer state, random generators, best epoch and
    patience count, and reports exactly what the uninterrupted run would have (the same
    numbers); a run that had already ended returns its outcome without training.
    """
    device = torch.device(device)
    t = config.training
    seed_everything(t.seed)
    d = config.data
    splits = open_dataset(
        dataset_dir(d.source, path=d.path, preset=d.preset, seed=d.seed, cache_dir=d.cache_dir),
        frame_cache=Path(d.cache_dir) / "frames",
    )
    train, valid = splits["train"], splits["valid"]
    inner = build_model(config, train.meta.dims)
    inner.fit_targets(train.labels, t.target_link)
    inner = inner.to(device)
    if resume is not None:
        inner.load_state_dict(resume.model_state)  # before DDP broadcasts rank 0's weights
    averager = WeightAverage(inner, t.weight_average) if t.weight_average else None
    model = wrap_model(inner) if wrap_model else inner
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sampler = build_sampler(config.spectrum)
    generator = torch.Generator().manual_seed(t.seed * 7919 + rank)
    evaluator = SpectrumEvaluator(
        valid,
        build_points(config.spectrum.protocols),
        seed=config.spectrum.eval_seed,
        shard=(rank, world_size),
    )

    def validate() -> tuple[float, list[dict]]:
        preds = evaluator.predict(_unwrap(model), device)
        if world_size > 1:
            shares: list = [None] * world_size
            torch.distributed.all_gather_object(shares, preds)
            preds = merge_predictions(shares)
        rows = evaluator.table(preds)
        return spectrum_score(rows), rows

    best = TrainingOutcome(best_epoch=0, best_score=float("inf"), epochs_run=0, stopped_early=False)
    bad_epochs = 0
    epoch = 0
    # Stages (module docstring): [] keeps the single-stage loop exactly as it was.
    plan = plan_stages(training_stages(inner), t.epochs)
    total = sum(n for _, n in plan) if plan else t.epochs
    stage_of = [i for i, (_, n) in enumerate(plan) for _ in range(n)]  # epoch e: stage_of[e - 1]
    active, stage, train_params, epoch_sampler = None, None, None, sampler

    def enter_stage(index: int) -> None:
        """Make stage ``index`` of the plan the active one: its mode, parameters, a fresh
        optimizer over them and its training sampler."""
        nonlocal active, stage, train_params, optimizer, epoch_sampler
        active, stage = index, plan[index][0]
        inner.set_stage(stage.name)
        train_params = stage_parameters(inner, stage)
        optimizer = torch.optim.AdamW(train_params, lr=t.lr, weight_decay=t.weight_decay)
        epoch_sampler = stage_sampler(stage, sampler)
        if averager is not None:
            averager.restart()

    def place_in_stage(epoch: int) -> tuple[int, int]:
        """``(epoch's number within its stage from 1, the stage's planned epochs)``."""
        if not plan:
            return epoch, total
        return epoch - sum(n for _, n in plan[:active]), plan[active][1]

    first = 1 if total else 0  # a zero-epoch run still validates and reports the initial model
    if resume is not None:
        done = resume.state
        best.best_epoch, best.best_score = done["best_epoch"], done["best_score"]
        best.rows, best.best_state = resume.best_rows, resume.best_state
        best.epochs_run = epoch = done["epoch"]
        bad_epochs = done.get("bad_epochs", 0)
        if done["patience_exhausted"] or done["epoch"] >= total:
            best.stopped_early = done["patience_exhausted"] and done["epoch"] < total
            return best
        first = done["epoch"] + 1
        if plan:
            # Back in the checkpoint's stage, as the stopped run was after that epoch; the
            # next epoch enters a new stage through the loop like any other (a stage change
            # may act on the model: ProMMA snapshots its reference backbone).
            enter_stage(next(i for i, (s, _) in enumerate(plan) if s.name == done["stage"]))
        optimizer.load_state_dict(resume.optimizer)
        if averager is not None:
            averager.load(resume.weight_average)
        # Last, as in the run that stopped: they were saved after the epoch's validation.
        restore_generators(resume.rng[rank], generator, device)
    with tempfile.TemporaryDirectory(prefix="robustmsa-ckpt-") as scratch:
        for epoch in range(first, total + 1):
            metrics: dict[str, float | str] = {"epoch": epoch}
            epoch_started = time.perf_counter()
            if plan:
                index = stage_of[epoch - 1] if epoch else len(plan) - 1
                if index != active:
                    enter_stage(index)
                metrics["stage"] = stage.name
            if epoch:
                rng = np.random.default_rng([t.seed, epoch])
                order = rng.permutation(len(train))[rank::world_size]
                metrics |= train_epoch(
                    model,
                    train,
                    order,
                    optimizer=optimizer,
                    sampler=epoch_sampler,
                    generator=generator,
                    batch_size=t.batch_size,
                    grad_clip=t.grad_clip,
                    device=device,
                    parameters=train_params,
                    autocast=AUTOCAST_DTYPES[t.precision],
                    after_step=averager.update if averager is not None else None,
                    rate_at=epoch_rates(t.lr_schedule, t.lr, *place_in_stage(epoch)),
                )
            # The evaluated weights (the average, when the run keeps one) are what the epoch
            # scores, and what becomes the best checkpoint; the raw ones continue training.
            with averager.applied() if averager is not None else contextlib.nullcontext():
                score, rows = validate()
                evaluated = weights_copy(inner)
            state = weights_copy(inner) if averager is not None else evaluated
            metrics[OBJECTIVE] = score
            metrics |= {f"val/{r['metric']}": r["value"] for r in rows if r["protocol"] == "clean"}
            selectable = stage is None or stage.select
            final = stage is None or active == len(plan) - 1
            if selectable and score < best.best_score:
                best.best_epoch, best.best_score, best.rows = epoch, score, rows
                best.best_state = evaluated  # a fresh CPU copy, never written to again
                bad_epochs = 0
            elif final:
                bad_epochs += 1
            best.epochs_run = epoch
            will_stop = bool(epoch) and final and bad_epochs >= t.patience
            rng = generator_states(generator, device)
            if world_size > 1:  # every rank's generators travel in rank 0's checkpoint
                gathered: list = [None] * world_size
                torch.distributed.all_gather_object(gathered, rng)
            else:
                gathered = [rng]
            ckpt = None
            if rank == 0:
                ckpt = save_checkpoint(
                    f"{scratch}/epoch-{epoch:04d}",
                    model_state=state,
                    best_state=best.best_state,
                    state={
                        "epoch": epoch,
                        "best_epoch": best.best_epoch,
                        "best_score": best.best_score,
                        "model": config.model.name,
                        "epochs": total,
                        "patience_exhausted": will_stop,
                        "bad_epochs": bad_epochs,
                        **({"stage": stage.name} if stage is not None else {}),
                    },
                    best_rows=best.rows,
                    config=config.to_dict(),
                    resume={
                        "optimizer": optimizer.state_dict(),
                        "rng": gathered,
                        "weight_average": averager.state() if averager is not None else None,
                    },
                )
            metrics["best/epoch"] = best.best_epoch
            metrics["best/" + OBJECTIVE] = best.best_score
            # The chosen epoch's clean metrics: what a multi-objective search compares
            # (``search.objectives``), all from the one checkpoint the trial keeps.
            metrics |= {
                f"best/val/{r['metric']}": r["value"] for r in best.rows if r["protocol"] == "clean"
            }
            # The run's length as the checkpoint state has it, as ints (MLflow logs numbers,
            # not bools): the console tells pruned from completed trials by them.
            metrics |= {"epochs": total, "patience_exhausted": int(will_stop)}
            # This epoch's training, validation and checkpoint: what a study's packing of its
            # trials is measured against (benchmarks/study_cost.py).
            metrics[TIMING_PREFIX + "epoch_s"] = time.perf_counter() - epoch_started
            reporter.report(metrics, str(ckpt) if ckpt else None)
            if will_stop:
                best.stopped_early = epoch < total
                break
    return best
