"""Where the loop's per-epoch reports go.

The loop calls ``reporter.report(metrics, checkpoint_dir)`` once per epoch. Which reporter it
gets decides the path: `LocalReporter` (plain calls and tests), `TuneReporter` (the loop runs
inside a Tune trial process), `TrainReporter` (inside Ray Train workers; Ray's
``TuneReportCallback`` forwards rank 0's reports to Tune). ``sinks`` are extra callables
``sink(metrics, step)`` run on rank 0, e.g. the MLflow per-epoch logger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Sink = Callable[[dict, int], None]


@dataclass
class LocalReporter:
    sinks: list[Sink] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir:
            self.checkpoints.append(checkpoint_dir)
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
