"""The model contract and the one model registry.

Every model maps a `Batch` to a `ModelOutput`:

- ``prediction``: float32 ``(B,)`` sentiment scores, in the dataset's label units;
- ``aux_losses``: named scalar auxiliary losses, unweighted; the training loop multiplies each
  by ``model.aux_loss_weights()[name]`` and adds it to the task loss it computes itself;
- ``extras``: tensors a study may inspect (reliabilities, routing weights, ...), detached or not;
- ``monitors``: named scalars the training loop averages over the epoch and reports as
  ``train/monitor/<name>`` (health signals, never optimised: DERL's shared-space variance);
- ``task_weight``: optional float32 ``(B,)`` per-sample weights of the task loss (mean 1,
  detached), for a model that judges some samples noisier than others (QA-MoE's
  heteroscedastic branch); None: every sample counts the same.

Each model file registers ``MODELS[name] = ModelSpec(...)`` with its config dataclass, whose
fields are validated by `robustmsa.config` (unknown keys and wrong types fail with the key path).

Targets are standardised, the same way for every model (`MSAModel`): a model learns
``z = (y - mu) / sigma``, with ``mu`` and ``sigma`` the training split's label mean and standard
deviation, and its ``prediction`` is mapped back to label units; with the normal-score link
(``training.target_link: normal_score``) it learns each label's normal score instead
(`robustmsa.models.target_link`).

A model trained in several stages (the multi-stage hook of `robustmsa.training.loop`) returns
`Stage` entries from ``training_stages()`` and switches with ``set_stage(name)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from robustmsa.data.batch import Batch
from robustmsa.models.target_link import (
    KNOTS,
    from_normal_score,
    normal_score_knots,
    to_normal_score,
)


@dataclass
class ModelOutput:
    prediction: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    task_weight: torch.Tensor | None = None
    monitors: dict[str, torch.Tensor] = field(default_factory=dict)
    # (B,): the prediction in the units the model learns, before `MSAModel.from_standardised`
    # (set by `MSAModel.forward`; None for a model that predicts label units directly).
    standardised_prediction: torch.Tensor | None = None


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
    """Base class: subclasses implement ``forward_standardised(batch) -> ModelOutput``.

    Standardised targets. `forward` gives the subclass the batch with its labels (and its clean
    batch's) standardised, ``z = (y - target_mean) / target_std``, and maps the prediction back,
    ``y_hat = target_std * z_hat + target_mean``. The training loop sets both from the training
    split (`set_target_scale`, `target_scale`) and takes its task loss in the same units (the
    label-unit L1 divided by ``target_std``), so every loss of every model is in standardised
    units. The two numbers are buffers: a checkpoint carries them, and a loaded model predicts
    in the units it was trained on. Extras (variances, reliabilities, routing) stay standardised.

    Why: with labels not centred at 0 (ICT-MMMO's 1-5, mean 3.5) the output bias has to travel
    to the mean at about one learning rate per Adam step (84 steps for 12 epochs of 220
    samples), and the models learned the ranking long before the offset. Standardising makes a
    constant shift of the labels cost nothing: the model sees the same targets. Before any
    `set_target_scale` (mean 0, std 1) the mapping is the identity.

    The normal-score link (``training.target_link: normal_score``, `robustmsa.models.target_link`)
    adds a monotone map after the standardisation: the subclass sees each label's normal score
    under the training labels' distribution and its prediction goes back through their quantile
    function; the task loss is then the L1 in score space (`robustmsa.training.loop.task_loss`).
    Its knots and a flag are buffers too (the flag off and the knots zero: the affine map alone,
    what a checkpoint from before the link was trained as). Both maps are applied with
    ``torch.where`` on the flag, so the affine path computes exactly what it did before the link
    existed (the same numbers, bit for bit) and no step waits on reading the flag.

    A model that predicts label units by construction (the oracle) overrides `forward`.
    """

    # State entries added after checkpoints were already being written, whose initial values
    # give exactly the model those checkpoints were trained as (here: the identity scale); a
    # checkpoint without them loads with them (`robustmsa.evaluation.logged.load_checkpoint`).
    neutral_additions: tuple[str, ...] = (
        "target_mean",
        "target_std",
        "target_normal_score",
        "target_knots",
    )

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        self.register_buffer("target_normal_score", torch.zeros((), dtype=torch.bool))
        self.register_buffer("target_knots", torch.zeros(KNOTS))

    def set_target_scale(self, mean: float, std: float, knots: torch.Tensor | None = None) -> None:
        """Standardise targets with ``mean`` and ``std`` (> 0) from now on; with ``knots``
        ``(KNOTS,)`` (`normal_score_knots` of the standardised training labels) take their
        normal scores after that, and without them the affine map alone."""
        if not std > 0:
            raise ValueError(f"target std must be positive, got {std}")
        self.target_mean.fill_(mean)
        self.target_std.fill_(std)
        self.target_normal_score.fill_(knots is not None)
        if knots is None:
            self.target_knots.zero_()
        else:
            if knots.shape != (KNOTS,) or not bool(torch.all(knots[1:] >= knots[:-1])):
                raise ValueError(f"target knots must be {KNOTS} non-decreasing values")
            self.target_knots.copy_(knots)

    def fit_targets(self, labels: torch.Tensor, link: str = "standardise") -> None:
        """Set the targets from the training labels ``(N,)``: their mean and standard deviation
        (`target_scale`) and, for ``link == "normal_score"``, the knots of their normal-score
        link, taken from the labels as `to_standardised` computes them (float32 for float32),
        so that a training label equals its knots exactly and gets its mid-rank score."""
        if link not in ("standardise", "normal_score"):
            raise ValueError(f"target_link: must be 'standardise' or 'normal_score', got {link!r}")
        mean, std = target_scale(labels)
        self.set_target_scale(mean, std)
        if link == "normal_score":
            with torch.no_grad():
                z = self.to_standardised(labels.to(self.target_mean.device))
            self.set_target_scale(mean, std, normal_score_knots(z))

    def to_standardised(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels ``(B,)`` in label units to the units the subclass learns."""
        z = (labels - self.target_mean) / self.target_std
        return torch.where(self.target_normal_score, to_normal_score(z, self.target_knots), z)

    def from_standardised(self, prediction: torch.Tensor) -> torch.Tensor:
        """The subclass's prediction ``(B,)`` back to label units."""
        z = torch.where(
            self.target_normal_score,
            from_normal_score(prediction, self.target_knots),
            prediction,
        )
        return z * self.target_std + self.target_mean

    def aux_loss_weights(self) -> dict[str, float]:
        """Weight of each auxiliary loss in the training objective (default: none)."""
        return {}

    def forward(self, batch: Batch) -> ModelOutput:
        out = self.forward_standardised(self._standardised(batch))
        out.standardised_prediction = out.prediction
        out.prediction = self.from_standardised(out.prediction)
        return out

    def forward_standardised(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        """The model on a batch whose labels are standardised; prediction ``(B,)`` likewise."""
        raise NotImplementedError

    def _standardised(self, batch: Batch) -> Batch:
        clean = batch.clean
        if clean is not None:
            clean = replace(clean, labels=self.to_standardised(clean.labels))
        return replace(batch, labels=self.to_standardised(batch.labels), clean=clean)


def target_scale(labels: torch.Tensor) -> tuple[float, float]:
    """``(mean, std)`` of the training labels ``(N,)`` for `MSAModel.set_target_scale`: the
    population standard deviation, in float64; 1.0 when the labels are all equal (or fewer
    than two), so that a constant label set is only shifted, never divided by zero."""
    y = labels.double()
    if y.numel() == 0:
        return 0.0, 1.0
    std = float(y.std(unbiased=False)) if y.numel() > 1 else 0.0
    return float(y.mean()), (std if std > 1e-12 else 1.0)


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
