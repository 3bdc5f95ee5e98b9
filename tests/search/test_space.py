"""The define-by-run search space, exercised with real Optuna trials."""

from __future__ import annotations

import optuna
from robustmsa.config import ParamSpace, from_dict, load
from robustmsa.search.kinds.search import optuna_sampler
from robustmsa.search.space import define_by_run
from search_smoke import STUDY_YAML

SPACE = [
    ParamSpace(name="model.params.num_experts", type="int", low=2, high=8),
    ParamSpace(name="model.params.top_k", type="int", low=1, high="model.params.num_experts"),
    ParamSpace(name="training.lr", type="float", low=1e-4, high=1e-2, log=True),
    ParamSpace(name="model.params.dense_routing", type="categorical", choices=[True, False]),
]


def tpe(seed: int):
    return optuna.samplers.TPESampler(seed=seed)


def sample(sampler, n: int, objective=lambda point: 0.0) -> list[dict]:
    """``n`` points of `SPACE` from ``sampler``, each told ``objective(point)``."""
    study = optuna.create_study(sampler=sampler)
    space = define_by_run(SPACE)
    points = []
    for _ in range(n):
        trial = study.ask()
        space(trial)
        points.append(dict(trial.params))
        study.tell(trial, objective(trial.params))
    return points


def bowl(point: dict) -> float:
    """A minimum where few experts meet a high rate: the two parameters interact."""
    return (point["model.params.num_experts"] - 3) ** 2 / 9 + (
        point["training.lr"] / 3e-3 - 1
    ) ** 2 * point["model.params.num_experts"]


def test_dependent_bound_and_ranges_hold():
    for point in sample(tpe(0), 40):
        assert 2 <= point["model.params.num_experts"] <= 8
        assert 1 <= point["model.params.top_k"] <= point["model.params.num_experts"]
        assert 1e-4 <= point["training.lr"] <= 1e-2
        # Every sampled point is a valid study config.
        config = from_dict({"model": {"name": "qa_moe"}}, point)
        assert config.model_params().top_k == point["model.params.top_k"]


def test_seeded_sampler_is_reproducible():
    assert sample(tpe(3), 12) == sample(tpe(3), 12)
    assert sample(tpe(3), 12) != sample(tpe(4), 12)


def study_sampler(*overrides: str):
    return optuna_sampler(load(STUDY_YAML, list(overrides)).kind_section)


def test_multivariate_tpe_keeps_the_dependent_bound_and_its_seed():
    """``search.multivariate`` reaches the sampler: the same random start, then other points
    than the independent TPE's, and top_k (its range moves with num_experts) stays valid."""
    on = ["search.multivariate=true", "search.seed=5"]
    joint = sample(study_sampler(*on), 24, bowl)
    start = load(STUDY_YAML).kind_section.resolved_startup_trials()
    apart = sample(study_sampler("search.seed=5"), 24, bowl)
    assert joint[:start] == apart[:start]
    assert joint[start:] != apart[start:]
    assert joint == sample(study_sampler(*on), 24, bowl)
    for point in joint:
        assert 1 <= point["model.params.top_k"] <= point["model.params.num_experts"] <= 8


def test_random_sampler_is_seeded():
    points = sample(study_sampler("search.sampler=random", "search.seed=2"), 6)
    assert points == sample(study_sampler("search.sampler=random", "search.seed=2"), 6)
    assert points != sample(study_sampler("search.sampler=random", "search.seed=3"), 6)
