"""Where the loop's per-epoch reports go.

The loop calls ``reporter.report(metrics, checkpoint_dir)`` once per epoch. Which reporter it
gets decides the path: `LocalReporter` (plain calls and tests), `TuneReporter` (the loop runs
inside a Tune trial process), `TrainReporter` (inside Ray Train workers; Ray's
``TuneReportCallback`` forwards rank 0's reports to Tune). ``sinks`` are extra callables
``sink(metrics, step)`` run on rank 0, e.g. the MLflow per-epoch logger.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Sink = Callable[[dict, int], None]


@dataclass
class LocalReporter:
    """Keeps the history; copies each checkpoint under ``checkpoint_root`` when given (the
    loop's checkpoint directory is valid only during the report call, as with Ray)."""

    sinks: list[Sink] = field(default_factory=list)
    checkpoint_root: Path | None = None
    history: list[dict] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir and self.checkpoint_root is not None:
            kept = Path(self.checkpoint_root) / Path(checkpoint_dir).name
            shutil.copytree(checkpoint_dir, kept)
            self.checkpoints.append(kept)
        for sink in self.sinks:
            sink(metrics, int(metrics["epoch"]))


@dataclass
class TuneReporter:
    sinks: list[Sink] = field(default_factory=list)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        from ray import tune

        for sink in self.sinks:
            sink(metrics, int(metrics["epoch"]))
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)


@dataclass
class TrainReporter:
    sinks: list[Sink] = field(default_factory=list)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        import ray.train

        rank0 = ray.train.get_context().get_world_rank() == 0
        if rank0:
            for sink in self.sinks:
                sink(metrics, int(metrics["epoch"]))
        checkpoint = (
            ray.train.Checkpoint.from_directory(checkpoint_dir)
            if rank0 and checkpoint_dir
            else None
        )
        ray.train.report(metrics, checkpoint=checkpoint)
