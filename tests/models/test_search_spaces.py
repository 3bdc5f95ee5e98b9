"""Every model's default search space validates and holds the values its paper (or the public
code it follows) reports strictly inside its range; every search study loads and searches what
issue 13 names.

The values, with their sources, are docs/references.md "Search spaces against the papers";
keep `REPORTED` and that table in step."""

from __future__ import annotations

import pytest
from paths import REPO
from robustmsa.config import from_dict, load
from robustmsa.models import MODELS

# (model, searched key) -> the reported values (docs/references.md gives the sources)
REPORTED = {
    ("qa_moe", "model.params.num_experts"): (8,),  # QA-MoE: 8 GLU experts
    ("mult", "model.params.dim"): (40,),  # MulT's Table 5, MOSI (the code's 30 is off-grid)
    ("mult", "model.params.heads"): (10, 5),  # Table 5, MOSI; the code's --num_heads
    ("mult", "model.params.layers"): (4, 5),  # Table 5's crossmodal blocks; --nlevels
    ("mult", "model.params.self_layers"): (5,),  # the code: max(nlevels, 3)
    ("mult", "model.params.dropout"): (0.2, 0.1),  # Table 5: embedding, output dropout
    ("mult", "training.lr"): (1e-3,),  # Table 5 and --lr
    ("promma", "model.params.prompt_length"): (16,),  # MPLMM's --prompt_length
    ("promma", "model.params.dim"): (30,),  # MPLMM's --prompt_dim (= --proj_dim)
    ("promma", "model.params.layers"): (5,),  # MPLMM's --nlevels
    ("promma", "training.lr"): (1e-3,),  # MPLMM's --lr
    ("derl", "model.params.orthogonality_weight"): (0.1, 0.3),  # MISA diff: MMSA, its code
    ("derl", "model.params.alignment_weight"): (0.3, 1.0),  # MISA sim: MMSA, its code
    ("derl", "model.params.feature_reconstruction_weight"): (1.0,),  # MISA recon
    ("derl", "model.params.hidden"): (128,),  # MISA's hidden_size
}

SEARCH_STUDIES = sorted(p.stem for p in (REPO / "studies" / "configs").glob("*_search.yaml"))


def _entry(model: str, key: str) -> dict:
    entries = [e for e in MODELS[model].search_space if e["name"] == key]
    assert len(entries) == 1, f"{model}: {key} is not searched by its default space"
    return entries[0]


def _strictly_inside(value, low=None, high=None, choices=None) -> bool:
    if choices is not None:
        ordered = sorted(choices)
        return value in ordered and ordered[0] < value < ordered[-1]
    return low < value < high


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_models_default_space_validates(model):
    # A search study that lists no space searches the model's own; loading checks that every
    # name is a real config key and that a named bound is an earlier parameter.
    config = from_dict({"model": {"name": model}, "study": {"kind": "search"}})
    assert [p.name for p in config.kind_section.space] == [
        e["name"] for e in MODELS[model].search_space
    ]


@pytest.mark.parametrize("study", SEARCH_STUDIES)
def test_every_search_study_loads(study):
    config = load(REPO / "studies" / "configs" / f"{study}.yaml")
    assert config.study.kind == "search" and config.kind_section.space
    assert config.name == study and config.tracking.experiment == study
    assert (REPO / "studies" / f"{study}.py").is_file()


@pytest.mark.parametrize(("model", "key"), list(REPORTED), ids=lambda v: str(v))
def test_the_reported_values_lie_strictly_inside_the_range(model, key):
    entry = _entry(model, key)
    for value in REPORTED[(model, key)]:
        if entry["type"] == "categorical":
            assert _strictly_inside(value, choices=entry["choices"]), (entry, value)
        else:
            assert _strictly_inside(value, entry["low"], entry["high"]), (entry, value)


def test_qa_moes_top_k_reaches_the_reported_three():
    top_k = _entry("qa_moe", "model.params.top_k")
    assert top_k["low"] < 3 and top_k["high"] == "model.params.num_experts"
    assert _entry("qa_moe", "model.params.num_experts")["high"] > 3


@pytest.mark.parametrize(
    ("study", "model", "searched"),
    [
        ("promma_search", "promma", {
            "model.params.prompt_length", "model.params.dim", "model.params.impute_length",
            "model.params.mi_weight", "model.params.orthogonality_weight",
            "model.params.imputation_weight", "model.params.evaluator_weight", "training.lr",
        }),
        ("derl_search", "derl", {
            "model.params.orthogonality_weight", "model.params.alignment_weight",
            "model.params.feature_reconstruction_weight",
            "model.params.representation_reconstruction_weight", "model.params.hidden",
            "training.lr",
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
    # The study's own ranges hold the reported values inside too.
    for p in config.kind_section.space:
        for value in REPORTED.get((model, p.name), ()):
            if p.type == "categorical":
                assert _strictly_inside(value, choices=p.choices), (p, value)
            else:
                assert _strictly_inside(value, p.low, p.high), (p, value)
