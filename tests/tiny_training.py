"""Train the small QA-MoE on the tiny synthetic dataset in-process (shared by training tests)."""

from __future__ import annotations

from robustmsa.config import from_dict
from robustmsa.training.loop import run_training
from robustmsa.training.reporting import LocalReporter


def tiny_config(tiny_dataset, **training):
    return from_dict(
        {
            "data": {"source": "parquet", "path": str(tiny_dataset)},
            "model": {"name": "qa_moe", "params": {"hidden": 16, "expert_hidden": 32}},
            "training": {"epochs": 3, "batch_size": 32, "seed": 0, **training},
        }
    )


def tiny_promma_config(tiny_dataset, **training):
    """A small ProMMA (two training stages, ``reference`` then ``full``, half the epochs each)
    on the tiny dataset, half its samples missing a modality at training time."""
    return from_dict(
        {
            "data": {"source": "parquet", "path": str(tiny_dataset)},
            "model": {
                "name": "promma",
                "params": {"dim": 8, "heads": 2, "layers": 1, "reference_fraction": 0.5},
            },
            "training": {"epochs": 4, "batch_size": 32, "seed": 0, "patience": 10, **training},
            "spectrum": {"p_drop": 0.5, "protocols": ["clean", "missing@all"]},
        }
    )


def train(config, tmp_path=None):
    reporter = LocalReporter(checkpoint_root=tmp_path)
    return run_training(config, reporter), reporter
