"""Epoch checkpoints: a directory with the current and best model weights and the outcome so far.

Layout: ``model.pt`` (current weights, for resume), ``best_model.pt`` (weights of the best epoch
on the validation objective), ``state.json`` (epoch, best epoch and score) and
``spectrum_valid.json`` (the validation spectrum rows of the best epoch), ``config.yaml``
(the resolved study config that trained it, re-runnable as is) and ``resume.pt`` (what
continuing the run needs beyond the weights: the optimizer's state and every random generator
the loop draws from, `ResumePoint`). Weights are loaded with ``weights_only=True``: a
checkpoint never runs code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from robustmsa.errors import RobustMSAError

MODEL_FILE = "model.pt"
BEST_MODEL_FILE = "best_model.pt"
STATE_FILE = "state.json"
ROWS_FILE = "spectrum_valid.json"
CONFIG_FILE = "config.yaml"
RESUME_FILE = "resume.pt"


@dataclass
class ResumePoint:
    """Where a run left off, read from its last checkpoint: training continues at epoch
    ``state["epoch"] + 1`` exactly as if it had never stopped (tests/training/test_resume.py).

    ``state``: ``state.json`` (epoch, best epoch and score, epochs without improvement, stage);
    ``model_state``/``best_state``: the current and best weights; ``best_rows``: the best
    epoch's validation rows; ``optimizer``: the optimizer's ``state_dict`` (of the stage the
    epoch belonged to); ``rng``: by rank (a DDP run's rank 0 gathers them), that rank's random
    generators: ``generator`` (the training-time corruption), ``cpu`` (torch's default
    generator: dropout, routing noise) and ``cuda`` (the device's, on a GPU)."""

    state: dict
    model_state: dict
    best_state: dict | None
    best_rows: list[dict]
    optimizer: dict
    rng: list[dict[str, torch.Tensor]]
    weight_average: dict | None = None


def save_checkpoint(
    directory: str | Path,
    *,
    model_state: dict,
    best_state: dict,
    state: dict,
    best_rows: list[dict],
    config: dict,
    resume: dict | None = None,
) -> Path:
    """Write a checkpoint (module docstring); ``resume``: ``{"optimizer": ..., "rng": ...,
    "weight_average": ...}`` of `ResumePoint`, written to ``resume.pt`` when given."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model_state, path / MODEL_FILE)
    if resume is not None:
        torch.save(resume, path / RESUME_FILE)
    torch.save(best_state, path / BEST_MODEL_FILE)
    (path / STATE_FILE).write_text(json.dumps(state, sort_keys=True))
    (path / ROWS_FILE).write_text(json.dumps(best_rows))
    (path / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def load_weights(directory: str | Path, best: bool = True) -> dict:
    """The best (or current) weights of the checkpoint ``directory``; `RobustMSAError` naming
    the file when it is not a torch weights file (torch's own message does not name it)."""
    path = Path(directory) / (BEST_MODEL_FILE if best else MODEL_FILE)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # missing, truncated, not torch's format, or refused by weights_only
        raise RobustMSAError(f"{path}: not a readable weights file ({exc})") from exc


def load_state(directory: str | Path) -> tuple[dict, list[dict]]:
    """``(state, best_rows)`` of the checkpoint ``directory``."""
    path = Path(directory)
    return json.loads((path / STATE_FILE).read_text()), json.loads((path / ROWS_FILE).read_text())


def load_resume_point(directory: str | Path) -> ResumePoint:
    """The `ResumePoint` of the checkpoint ``directory``; `RobustMSAError` naming the file when
    one is missing or unreadable (a checkpoint written before ``resume.pt`` existed cannot be
    continued exactly)."""
    path = Path(directory)
    resume_file = path / RESUME_FILE
    if not resume_file.is_file():
        raise RobustMSAError(f"{resume_file}: missing; this checkpoint cannot be continued")
    try:
        resume = torch.load(resume_file, map_location="cpu", weights_only=True)
        state, rows = load_state(path)
    except Exception as exc:  # truncated or not torch's format; refused by weights_only
        raise RobustMSAError(f"{path}: not a checkpoint that can be continued ({exc})") from exc
    return ResumePoint(
        state=state,
        model_state=load_weights(path, best=False),
        best_state=load_weights(path, best=True),
        best_rows=rows,
        optimizer=resume["optimizer"],
        rng=list(resume["rng"]),
        weight_average=resume.get("weight_average"),
    )
