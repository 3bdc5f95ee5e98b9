"""The one per-worker training loop (plain PyTorch), shared by every path that trains a model.

Per epoch: shuffle (seeded by ``training.seed`` and the epoch), shard by rank, corrupt each batch
with the training-time sampler, minimise ``L1(prediction, label) + sum_k w_k * aux_k``, then
evaluate the validation spectrum; its `spectrum_score` is the objective of early stopping and
of the search. Every epoch writes a checkpoint and reports; the best epoch's weights and
validation spectrum travel in every checkpoint, so the last one holds the trial's outcome.
"""

from __future__ import annotations

import tempfile
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
from robustmsa.models.base import MSAModel
from robustmsa.spectrum import SpectrumSampler, build_points, build_sampler
from robustmsa.training.checkpoint import save_checkpoint

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


def build_model(config: StudyConfig, dims: dict[str, int]) -> MSAModel:
    """The model named by ``config.model.name`` with its validated params."""
    return MODELS[config.model.name].build(config.model_params(), dims)


def _unwrap(model: nn.Module) -> MSAModel:
    return getattr(model, "module", model)


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
) -> dict[str, float]:
    """One pass over ``order``: mean ``train/loss``, ``train/task_loss`` and ``train/aux/*``."""
    inner = _unwrap(model)
    weights = inner.aux_loss_weights()
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    for start in range(0, len(order), batch_size):
        batch = sampler(split.batch(order[start : start + batch_size]), generator).to(device)
        out = model(batch)
        task = nn.functional.l1_loss(out.prediction, batch.labels)
        loss = task + sum(weights.get(k, 0.0) * v for k, v in out.aux_losses.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        parts = {"train/loss": loss, "train/task_loss": task}
        parts.update({f"train/aux/{k}": v for k, v in out.aux_losses.items()})
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        steps += 1
    return {k: v / max(steps, 1) for k, v in sums.items()}


def run_training(
    config: StudyConfig,
    reporter: Reporter,
    *,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
) -> TrainingOutcome:
    """Train ``config``'s model on its dataset; report every epoch; return the best epoch.

    ``wrap_model`` is Ray Train's ``prepare_model`` under DDP (it moves the model to the
    worker's device). Under DDP each rank predicts its share of the validation rows and the
    shares are gathered, so every rank computes the same table (identical to one worker's) and
    takes the same early-stopping decision.
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
    inner = build_model(config, train.meta.dims).to(device)
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
    with tempfile.TemporaryDirectory(prefix="robustmsa-ckpt-") as scratch:
        # A zero-epoch run still validates and reports the initial model once.
        for epoch in range(1 if t.epochs else 0, t.epochs + 1):
            metrics: dict[str, float] = {"epoch": epoch}
            if epoch:
                rng = np.random.default_rng([t.seed, epoch])
                order = rng.permutation(len(train))[rank::world_size]
                metrics |= train_epoch(
                    model,
                    train,
                    order,
                    optimizer=optimizer,
                    sampler=sampler,
                    generator=generator,
                    batch_size=t.batch_size,
                    grad_clip=t.grad_clip,
                    device=device,
                )
            score, rows = validate()
            metrics[OBJECTIVE] = score
            metrics |= {f"val/{r['metric']}": r["value"] for r in rows if r["protocol"] == "clean"}
            state = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
            if score < best.best_score:
                best.best_epoch, best.best_score, best.rows = epoch, score, rows
                best.best_state = state  # a fresh CPU copy, never written to again
                bad_epochs = 0
            else:
                bad_epochs += 1
            best.epochs_run = epoch
            will_stop = bool(epoch) and bad_epochs >= t.patience
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
                        "epochs": t.epochs,
                        "patience_exhausted": will_stop,
                    },
                    best_rows=best.rows,
                    config=config.to_dict(),
                )
            metrics["best/epoch"] = best.best_epoch
            metrics["best/" + OBJECTIVE] = best.best_score
            reporter.report(metrics, str(ckpt) if ckpt else None)
            if will_stop:
                best.stopped_early = epoch < t.epochs
                break
    return best
