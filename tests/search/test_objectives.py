"""Multi-objective search without Ray: objectives in the config, the Pareto front, the knee
rule, and what is logged on the parent run (a real sqlite MLflow store)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from paths import REPO
from robustmsa.config import load
from robustmsa.errors import ConfigError
from robustmsa.search.kinds.base import StudyResult, TrialRow
from robustmsa.search.kinds.search import (
    PARETO_TABLE,
    SELECTION_TAG,
    knee,
    log_pareto,
    objective_mode,
    pareto_front,
)

STUDY_YAML = REPO / "studies" / "configs" / "qa_moe_search.yaml"
OBJ = ["val/spectrum_score", "val/corr"]  # minimised, maximised


def row(tid: str, score: float, corr: float) -> TrialRow:
    return TrialRow(tid, {}, score, 2, scores={OBJ[0]: score, OBJ[1]: corr}, run_id=f"r{tid}")


def test_modes_follow_the_metric():
    assert [objective_mode(o) for o in (*OBJ, "val/mae", "val/acc7")] == [
        "min", "max", "min", "max",
    ]  # fmt: skip


def test_the_front_keeps_what_nothing_dominates_and_the_knee_balances_it():
    rows = [
        row("a", 0.70, 0.20),  # best score
        row("b", 0.80, 0.60),  # best corr
        row("c", 0.72, 0.55),  # near both: the knee
        row("d", 0.85, 0.50),  # dominated by b
        row("e", 0.72, 0.50),  # dominated by c
    ]
    front = pareto_front(rows, OBJ)
    assert [t.trial_id for t in front] == ["a", "b", "c"]
    assert knee(front, OBJ).trial_id == "c"
    # One member: it is the choice; equal distances go to the better first objective.
    assert knee(front[:1], OBJ).trial_id == "a"
    assert knee([row("x", 0.7, 0.6), row("y", 0.8, 0.7)], OBJ).trial_id == "x"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["search.objectives=[val/nope]"],
            r"search\.objectives\[0\]: unknown objective 'val/nope'",
        ),
        (
            ["search.objectives=[val/spectrum_score, val/mae]", "spectrum.protocols=[missing@all]"],
            r"search\.objectives\[1\]: val/mae is measured on the clean validation point",
        ),
        (["search.objectives=[val/mae, val/mae]"], r"search\.objectives: repeated"),
    ],
)
def test_bad_objectives_fail_when_the_config_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(STUDY_YAML, overrides)


def test_the_front_is_logged_on_the_parent(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    exp = client.create_experiment("e", (tmp_path / "art").as_uri())
    parent = client.create_run(exp).info.run_id
    rows = [row("a", 0.70, 0.20), row("b", 0.80, 0.60), row("c", 0.72, 0.55), row("d", 0.9, 0.1)]
    result = StudyResult(parent, exp, "", "", trials=rows)
    result.pareto = pareto_front(rows, OBJ)
    result.best = knee(result.pareto, OBJ)
    log_pareto(client, parent, result, OBJ)
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(client.download_artifacts(parent, PARETO_TABLE, tmp)).read_text())
    got = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    assert [(r["trial_id"], r["on_front"], r["selected"]) for r in got] == [
        ("a", True, False), ("b", True, False), ("c", True, True), ("d", False, False),
    ]  # fmt: skip
    assert got[1][OBJ[1]] == 0.60
    assert "knee" in client.get_run(parent).data.tags[SELECTION_TAG]
    assert [a.path for a in client.list_artifacts(parent, "pareto")] == ["pareto/pareto_front.png"]


def test_tpe_leaves_random_sampling_after_half_the_trials():
    # Optuna's default of 10 random startup trials would keep an 8-trial search random.
    unset = ["search.startup_trials=null"]
    s = load(STUDY_YAML, [*unset, "search.num_samples=8"]).kind_section
    assert s.resolved_startup_trials() == 4
    assert load(STUDY_YAML, [*unset, "search.num_samples=2"]).kind_section \
        .resolved_startup_trials() == 2  # fmt: skip
    # The default study: up to 16 trials in 64 trial-epochs, its first 4 at random.
    s = load(STUDY_YAML).kind_section
    assert (s.num_samples, s.trial_epoch_budget, s.resolved_startup_trials()) == (16, 64, 4)
    assert load(STUDY_YAML, ["search.startup_trials=3"]).kind_section.resolved_startup_trials() == 3
    with pytest.raises(ConfigError, match=r"search\.startup_trials: must be >= 1"):
        load(STUDY_YAML, ["search.startup_trials=0"])
