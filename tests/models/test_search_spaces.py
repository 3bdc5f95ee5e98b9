"""Every model's default search space holds the values its paper (or the code it follows)
reports strictly inside its range, and every search study searches what issue 13 names.

The values, with their sources, are docs/references.md "Search spaces against the papers";
keep the two in step."""

from __future__ import annotations

import pytest
from paths import REPO
from robustmsa.config import load
from robustmsa.models import MODELS

# (model, searched key) -> the reported value
REPORTED = {
    ("qa_moe", "model.params.num_experts"): 8,  # QA-MoE: 8 GLU experts
    ("mult", "model.params.dim"): 30,  # MulT's code: d_l = d_a = d_v = 30
    ("mult", "model.params.heads"): 5,  # --num_heads 5
    ("mult", "model.params.layers"): 5,  # --nlevels 5
    ("mult", "training.lr"): 1e-3,  # --lr 1e-3
    ("promma", "model.params.prompt_length"): 16,  # MPLMM: prompt length 16
    ("promma", "model.params.dim"): 30,  # MPLMM: prompt width 30 (the MulT backbone's)
    ("promma", "model.params.layers"): 5,  # its MulT backbone
    ("derl", "model.params.orthogonality_weight"): 0.1,  # MISA's diff weight on MOSI
    ("derl", "model.params.alignment_weight"): 0.3,  # MISA's sim weight
    ("derl", "model.params.feature_reconstruction_weight"): 1.0,  # MISA's recon weight
}


def _entry(model: str, key: str) -> dict:
    return next(e for e in MODELS[model].search_space if e["name"] == key)


@pytest.mark.parametrize(("model", "key"), list(REPORTED), ids=lambda v: str(v))
def test_the_reported_value_lies_strictly_inside_the_range(model, key):
    entry, value = _entry(model, key), REPORTED[(model, key)]
    if entry["type"] == "categorical":
        choices = sorted(entry["choices"])
        assert value in choices and choices[0] < value < choices[-1], (entry, value)
    else:
        assert entry["low"] < value < entry["high"], (entry, value)


def test_qa_moes_top_k_reaches_the_reported_three():
    top_k = _entry("qa_moe", "model.params.top_k")
    assert top_k["low"] < 3 and top_k["high"] == "model.params.num_experts"


@pytest.mark.parametrize(
    ("study", "model", "searched"),
    [
        ("promma_search", "promma", {
            "model.params.prompt_length", "model.params.dim", "model.params.impute_length",
            "model.params.mi_weight", "model.params.orthogonality_weight",
            "model.params.imputation_weight", "training.lr",
        }),
        ("derl_search", "derl", {
            "model.params.orthogonality_weight", "model.params.alignment_weight",
            "model.params.feature_reconstruction_weight",
            "model.params.representation_reconstruction_weight", "model.params.hidden",
        }),
        ("qa_moe_search", "qa_moe", {
            "model.params.num_experts", "model.params.top_k", "model.params.uncertainty_weight",
            "training.lr",
        }),
    ],
)  # fmt: skip
def test_each_search_study_searches_its_models_characteristic_parameters(study, model, searched):
    config = load(REPO / "studies" / "configs" / f"{study}.yaml")
    assert config.model.name == model and config.study.kind == "search"
    assert searched <= {p.name for p in config.kind_section.space}
    assert (REPO / "studies" / f"{study}.py").is_file()
    # The study's own ranges hold the reported values inside too.
    for p in config.kind_section.space:
        value = REPORTED.get((model, p.name))
        if value is None:
            continue
        if p.type == "categorical":
            choices = sorted(p.choices)
            assert choices[0] < value < choices[-1], (p, value)
        else:
            assert p.low < value < p.high, (p, value)
