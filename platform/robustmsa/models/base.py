"""The model contract and the one model registry.

Every model maps a `Batch` to a `ModelOutput`:

- ``prediction``: float32 ``(B,)`` sentiment scores;
- ``aux_losses``: named scalar auxiliary losses, unweighted; the training loop multiplies each
  by ``model.aux_loss_weights()[name]`` and adds it to the task loss it computes itself;
- ``extras``: tensors a study may inspect (reliabilities, routing weights, ...), detached or not.

Each model file registers ``MODELS[name] = ModelSpec(...)`` with its config dataclass, whose
fields are validated by `robustmsa.config` (unknown keys and wrong types fail with the key path).

A model trained in several stages (the multi-stage hook of `robustmsa.training.loop`) returns
`Stage` entries from ``training_stages()`` and switches with ``set_stage(name)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from robustmsa.data.batch import Batch


@dataclass
class ModelOutput:
    prediction: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    """One stage of multi-stage training, as `robustmsa.training.loop.run_training` reads it.

    - ``name``: passed to the model's ``set_stage`` and reported as the ``stage`` metric;
    - ``fraction`` (share of ``training.epochs``, rounded) or ``epochs`` (a count); the last
      stage may set neither and takes the remaining epochs;
    - ``sampler``: None (the study's training sampler), ``"complete"`` (no corruption: the
      batches as stored) or a `SpectrumSampler`;
    - ``train``: parameter-name prefixes of the parameters the stage optimises (a fresh
      optimizer per stage); None: all of them;
    - ``select``: whether the stage's epochs may become the best epoch (the last must).
    """

    name: str
    fraction: float | None = None
    epochs: int | None = None
    sampler: object = None
    train: tuple[str, ...] | None = None
    select: bool = True


class MSAModel(nn.Module):
    """Base class: subclasses implement `forward(batch) -> ModelOutput`."""

    def aux_loss_weights(self) -> dict[str, float]:
        """Weight of each auxiliary loss in the training objective (default: none)."""
        return {}

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its config class and how to build it.

    ``build(config, dims)`` gets the validated config instance and the feature dims per
    modality of the dataset (``{"text": d_t, "audio": d_a, "vision": d_v}``).
    ``search_space``: the model's characteristic hyperparameters as `search.space` entries
    (``{"name": "model.params.<field>", "type": ..., ...}``), the default space of a search
    study that lists none.
    """

    name: str
    config_cls: type
    build: Callable[[object, dict[str, int]], MSAModel]
    search_space: tuple[dict, ...] = ()


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} registered twice")
    MODELS[spec.name] = spec
    return spec
