"""An exponential moving average of a model's parameters, the weights a run evaluates.

``training.weight_average`` (the decay ``d``, 0 = off): after every optimizer step each
parameter's average moves towards it, ``avg <- a * avg + (1 - a) * param`` with
``a = min(d, (1 + n) / (10 + n))`` after ``n`` earlier updates (the warm-up of TensorFlow's
``ExponentialMovingAverage``: early averages follow the fast-moving weights instead of dwelling on
the initialisation). Each training stage starts a fresh average. Validation, selection and the
best checkpoint use the averaged weights; the raw weights keep training.

Why it exists, and why it is off by default: on the MOSI-shaped benchmark, under the continuous
training spectrum, successive epochs of one run differ by 0.03-0.09 in validation spectrum score,
as much as good configurations differ. On single runs the average was steadier (QA-MoE's default
study, seed 0, lr 2e-3, epochs 3-8: raw 0.851 0.915 0.851 0.908 0.828 0.829, averaged at 0.9
0.890 0.901 0.834 0.837 0.820 0.812), but over the random-search trials of the P5 benchmark the
mean change between successive late epochs stayed 0.044 (docs/architecture.md §4b).

Only parameters are averaged; buffers (the target scale, ProMMA's reference snapshot) are the
live model's. The average is float32 on the model's device; `state` and `load` carry it and its
update count through a resume, so a continued run averages exactly as the uninterrupted one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    """The moving average of ``model``'s parameters with decay ``decay`` in (0, 1)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight_average: the decay must be in (0, 1), got {decay}")
        self.model, self.decay = model, decay
        self.restart()

    def restart(self) -> None:
        """Start over from the current parameters (a new training stage: a fresh optimizer, and
        a fresh average, so that parameters the stage freezes stay exactly as they are)."""
        self.updates = 0
        self.average = {n: p.detach().float().clone() for n, p in self.model.named_parameters()}

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current parameters (after an optimizer step)."""
        a = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for name, p in self.model.named_parameters():
            # lerp: a parameter that did not move leaves its average exactly as it was.
            self.average[name].lerp_(p.detach().float(), 1.0 - a)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the model holds the averaged parameters; after it, its own again."""
        with torch.no_grad():
            own = {n: p.detach().clone() for n, p in self.model.named_parameters()}
            for name, p in self.model.named_parameters():
                p.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    p.copy_(own[name])

    def state(self) -> dict:
        """What a checkpoint keeps: the averages (on the CPU) and the update count."""
        return {
            "updates": self.updates,
            "average": {n: t.detach().cpu().clone() for n, t in self.average.items()},
        }

    def load(self, state: dict) -> None:
        """Continue from `state`."""
        self.updates = int(state["updates"])
        for name, t in state["average"].items():
            self.average[name].copy_(t)
