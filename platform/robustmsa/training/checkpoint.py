"""Epoch checkpoints: a directory with the current and best model weights and the outcome so far.

Layout: ``model.pt`` (current weights, for resume), ``best_model.pt`` (weights of the best epoch
on the validation objective), ``state.json`` (epoch, best epoch and score) and
``spectrum_valid.json`` (the validation spectrum rows of the best epoch) and ``config.yaml``
(the resolved study config that trained it, re-runnable as is). Weights are loaded
with ``weights_only=True``: a checkpoint never runs code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from robustmsa.errors import RobustMSAError

MODEL_FILE = "model.pt"
BEST_MODEL_FILE = "best_model.pt"
STATE_FILE = "state.json"
ROWS_FILE = "spectrum_valid.json"
CONFIG_FILE = "config.yaml"


def save_checkpoint(
    directory: str | Path,
    *,
    model_state: dict,
    best_state: dict,
    state: dict,
    best_rows: list[dict],
    config: dict,
) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model_state, path / MODEL_FILE)
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
