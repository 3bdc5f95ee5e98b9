"""The QA-MoE search study (studies/configs/qa_moe_search.yaml) at smoke size on the tiny
preset, for the tests that run a search of their own."""

from __future__ import annotations

from paths import REPO
from robustmsa.config import StudyConfig, load

STUDY_YAML = REPO / "studies" / "configs" / "qa_moe_search.yaml"


def smoke_config(tmp_path, **overrides) -> StudyConfig:
    """3 trials of 3 epochs of a small QA-MoE on tiny data under ``tmp_path``, no reference
    model; ``overrides``: key paths to values."""
    base = {
        "data.preset": "tiny",
        "data.cache_dir": str(tmp_path / "data"),
        "training.epochs": 3,
        "search.num_samples": 3,
        "search.grace_period": 1,
        "model.params.hidden": 16,
        "model.params.expert_hidden": 32,
        "study.reference_model": "null",  # the first test turns it on
    }
    base.update(overrides)
    return load(STUDY_YAML, [f"{k}={v}" for k, v in base.items()])
