"""Evaluate a trained checkpoint: the one a trial just finished, or one logged to MLflow.

A checkpoint directory (``training/checkpoint.py``) holds ``best_model.pt`` (the weights of the
epoch chosen on the validation objective) and ``config.yaml`` (the resolved study config that
trained them); a finished trial logs both to its run under ``checkpoint/``. Either way the
model is rebuilt from the config with the dataset's dims and loaded with ``weights_only=True``.

Test-split discipline (docs/architecture.md §3): `evaluate_test_once` is the only code that
evaluates the
test split for a run; it refuses a run that already has a test evaluation, so the test split
is reported once and never feeds a choice (selection reads ``val/...`` metrics only).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from robustmsa.config import StudyConfig, from_dict
from robustmsa.data.parquet import ParquetSplit, open_dataset
from robustmsa.data.source import dataset_dir
from robustmsa.errors import ConfigError, RobustMSAError
from robustmsa.evaluation.spectrum import SpectrumEvaluator
from robustmsa.models.base import MSAModel
from robustmsa.spectrum import build_points
from robustmsa.training.checkpoint import BEST_MODEL_FILE, CONFIG_FILE, load_weights

CHECKPOINT_ARTIFACTS = "checkpoint"
TEST_TAG = "robustmsa.test_evaluated"
SPLIT_NAMES = ("train", "valid", "test")


@dataclass
class TrainedModel:
    """A rebuilt model in eval mode, the config that trained it and its dataset's splits."""

    config: StudyConfig
    model: MSAModel
    splits: dict[str, ParquetSplit]


def load_checkpoint(directory: str | Path) -> TrainedModel:
    """The best weights of the checkpoint ``directory``, rebuilt from its ``config.yaml``."""
    from robustmsa.training.loop import build_model

    directory = Path(directory)
    for name in (BEST_MODEL_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise RobustMSAError(f"{directory}: not a checkpoint (no {name})")
    with open(directory / CONFIG_FILE) as f:
        config = from_dict(yaml.safe_load(f))
    d = config.data
    splits = open_dataset(
        dataset_dir(d.source, path=d.path, preset=d.preset, seed=d.seed, cache_dir=d.cache_dir),
        frame_cache=Path(d.cache_dir) / "frames",
    )
    model = build_model(config, splits["train"].meta.dims)
    state = load_weights(directory, best=True)
    # A checkpoint older than an entry the model gained with a neutral initial value (the
    # target scale, ProMMA's presence weights) is that model with the entry at that value.
    own = model.state_dict()
    state |= {k: own[k] for k in model.neutral_additions if k in own and k not in state}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # shapes or names that do not match the config's model
        raise RobustMSAError(
            f"{directory / BEST_MODEL_FILE}: does not fit its config ({exc})"
        ) from exc
    model.eval()
    return TrainedModel(config, model, splits)


def load_logged(client: MlflowClient, run_id: str) -> TrainedModel:
    """The checkpoint that the run ``run_id`` logged under ``checkpoint/``."""
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        raise RobustMSAError(f"run {run_id!r}: not found ({exc.message})") from exc
    with tempfile.TemporaryDirectory(prefix="robustmsa-eval-") as tmp:
        try:
            local = client.download_artifacts(run_id, CHECKPOINT_ARTIFACTS, tmp)
        except (MlflowException, OSError) as exc:
            raise RobustMSAError(
                f"run {run_id!r}: no logged checkpoint (artifact '{CHECKPOINT_ARTIFACTS}/'; "
                "only finished trials log one)"
            ) from exc
        return load_checkpoint(local)


def split_evaluator(
    trained: TrainedModel,
    split: str,
    protocols: Sequence[str] | None = None,
    *,
    batch_size: int = 128,
) -> SpectrumEvaluator:
    """The points of ``protocols`` (default: the config's validation protocols) on ``split``,
    corrupted with the config's evaluation seed: the inputs the model was validated on."""
    if split not in SPLIT_NAMES:
        raise ConfigError(f"split: must be one of {list(SPLIT_NAMES)}, got {split!r}")
    names = list(protocols) if protocols else list(trained.config.spectrum.protocols)
    try:
        points = build_points(names)
    except ValueError as exc:
        raise ConfigError(f"protocols: {exc}") from exc
    return SpectrumEvaluator(
        trained.splits[split],
        points,
        seed=trained.config.spectrum.eval_seed,
        batch_size=batch_size,
        cache=False,
    )


def evaluate_split(
    trained: TrainedModel,
    split: str,
    protocols: Sequence[str] | None = None,
    *,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Long-form spectrum rows of ``trained`` on ``split`` (see `split_evaluator`)."""
    evaluator = split_evaluator(trained, split, protocols, batch_size=batch_size)
    return evaluator.evaluate(trained.model.to(device), device)


def evaluate_test_once(
    client: MlflowClient,
    run_id: str,
    checkpoint_dir: str | Path,
    protocols: Sequence[str] | None = None,
    *,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Evaluate the finished trial's chosen checkpoint on the test split at ``protocols``
    (default: the config's ``spectrum.report_protocols``) on ``device``, log it to ``run_id``
    (``test/spectrum/...``, ``test/robust/...``, the table; no figures: `robustmsa.evaluation.
    report` draws them) and tag the run; returns the rows. The oracle on the same points is the
    study's, logged once on its parent run.

    Called once per run, after training and selection are over. Refuses a run that already
    has a test evaluation.
    """
    from robustmsa.tracking.spectrum import log_spectrum

    if TEST_TAG in client.get_run(run_id).data.tags:
        raise RobustMSAError(f"run {run_id}: the test split was already evaluated once")
    trained = load_checkpoint(checkpoint_dir)
    names = protocols or trained.config.spectrum.report_protocols
    evaluator = split_evaluator(trained, "test", names)
    # A minute on CPU for the full report: a bar (drawn by the driver from a Ray task).
    bar = f"test report {run_id[:8]}"
    rows = evaluator.evaluate(trained.model.to(device), device, progress=bar)
    log_spectrum(client, run_id, rows, split="test", figures=False)
    client.set_tag(run_id, TEST_TAG, "once, after training; checkpoint chosen on valid")
    return rows
