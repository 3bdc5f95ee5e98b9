"""`robustmsa.analysis.optuna_rebuild`: the Optuna study rebuilt from the trials, and its
parameter importances."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib.figure import Figure
from paths import REPO
from robustmsa import analysis
from robustmsa.config import load

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # MLflow's log_table (the study's own logging, in the fixture) under pandas 3
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes"),
]


def test_the_optuna_study_is_rebuilt_from_the_trials(store, study):
    trials = analysis.trials_frame(store["client"], study)
    space = analysis.search_space(study)
    rebuilt = analysis.optuna_study(trials, space)
    a, b = rebuilt.trials
    assert a.state == optuna.trial.TrialState.COMPLETE and a.value == 0.8
    assert b.state == optuna.trial.TrialState.PRUNED and b.intermediate_values == {1: 1.2}
    assert a.params["model.params.top_k"] == 3
    assert a.distributions["model.params.top_k"].high == 4  # the trial's own num_experts
    assert b.distributions["model.params.top_k"].high == 6
    assert a.user_attrs == {"trial_id": "aaaa", "run_id": store["completed"]}
    one = analysis.param_importances(rebuilt)
    assert one.completed == 1 and len(one.values) == 4
    assert np.allclose(one.values.to_numpy(), 0.25)
    assert "1 completed trial" in one.notes[0]
    none = analysis.param_importances(analysis.optuna_study(trials.iloc[1:], space))
    assert none.values.empty and none.completed == 0 and none.notes
    for importances in (one, none):
        assert isinstance(analysis.importance_figure(importances), Figure)


def test_importances_find_the_parameter_that_matters():
    rng = np.random.default_rng(0)
    space = load(REPO / "studies" / "configs" / "qa_moe_search.yaml").kind_section.space
    rows = []
    for i in range(40):
        experts = int(rng.integers(2, 9))
        lr = float(np.exp(rng.uniform(np.log(3e-4), np.log(3e-3))))
        rows.append(
            {
                "trial_id": f"t{i}",
                "run_id": f"r{i}",
                "outcome": "completed",
                "score": 1.0 + 5.0 * abs(np.log10(lr) + 3.0) + 0.001 * rng.standard_normal(),
                "epochs": 2,
                "model.params.num_experts": experts,
                "model.params.top_k": int(rng.integers(1, experts + 1)),
                "model.params.uncertainty_weight": float(rng.uniform(0.01, 1.0)),
                "training.lr": lr,
            }
        )
    found = analysis.param_importances(analysis.optuna_study(pd.DataFrame(rows), space))
    assert found.values.index[0] == "training.lr"
    assert found.values.sum() == pytest.approx(1.0)
