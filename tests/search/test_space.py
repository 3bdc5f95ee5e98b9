"""The define-by-run search space, exercised with real Optuna trials."""

from __future__ import annotations

import optuna
from robustmsa.config import ParamSpace, from_dict
from robustmsa.search.space import define_by_run

SPACE = [
    ParamSpace(name="model.params.num_experts", type="int", low=2, high=8),
    ParamSpace(name="model.params.top_k", type="int", low=1, high="model.params.num_experts"),
    ParamSpace(name="training.lr", type="float", low=1e-4, high=1e-2, log=True),
    ParamSpace(name="model.params.dense_routing", type="categorical", choices=[True, False]),
]


def sample(seed: int, n: int) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    space = define_by_run(SPACE)
    points = []
    for _ in range(n):
        trial = study.ask()
        space(trial)
        points.append(dict(trial.params))
        study.tell(trial, 0.0)
    return points


def test_dependent_bound_and_ranges_hold():
    for point in sample(seed=0, n=40):
        assert 2 <= point["model.params.num_experts"] <= 8
        assert 1 <= point["model.params.top_k"] <= point["model.params.num_experts"]
        assert 1e-4 <= point["training.lr"] <= 1e-2
        # Every sampled point is a valid study config.
        config = from_dict({"model": {"name": "qa_moe"}}, point)
        assert config.model_params().top_k == point["model.params.top_k"]


def test_seeded_sampler_is_reproducible():
    assert sample(seed=3, n=12) == sample(seed=3, n=12)
    assert sample(seed=3, n=12) != sample(seed=4, n=12)
