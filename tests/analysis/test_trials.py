"""`robustmsa.analysis.trials`: the trials as pandas frames."""

from __future__ import annotations

import pytest
from robustmsa import analysis

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # MLflow's log_table (the study's own logging, in the fixture) under pandas 3
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes"),
]


def test_trials_frame_has_one_typed_row_per_trial(store, study):
    trials = analysis.trials_frame(store["client"], study)
    assert list(trials["trial_id"]) == ["aaaa", "bbbb"]  # by start time; no reference, no stray
    assert list(trials.columns[: len(analysis.TRIAL_COLUMNS)]) == list(analysis.TRIAL_COLUMNS)
    names = [p.name for p in store["config"].kind_section.space]
    assert list(trials.columns[len(analysis.TRIAL_COLUMNS) :]) == names
    a, b = trials.to_dict("records")
    assert (a["outcome"], a["score"], a["epochs"]) == ("completed", 0.8, 3)
    assert (b["outcome"], b["score"], b["epochs"]) == ("pruned", 1.2, 1)
    assert a["model.params.num_experts"] == 4 and isinstance(a["model.params.num_experts"], int)
    assert a["training.lr"] == pytest.approx(0.002)
    assert a["duration_s"] == pytest.approx(8.0)
    assert a["run_id"] == store["completed"]
    every = analysis.trials_frame(store["client"], study, include_roles=True)
    assert list(every["role"].fillna("")) == ["reference", "", ""]


def test_score_history_is_per_epoch_with_the_studys_clock(store, study):
    trials = analysis.trials_frame(store["client"], study)
    history = analysis.score_history(store["client"], trials, since=study.info.start_time)
    assert list(history.columns) == list(analysis.HISTORY_COLUMNS)
    assert list(zip(history["trial_id"], history["step"], history["value"], strict=True)) == [
        ("aaaa", 1, 0.9),
        ("aaaa", 2, 0.8),
        ("bbbb", 1, 1.2),
        ("aaaa", 3, 0.85),
    ]
    assert list(history["elapsed_s"]) == [2.0, 3.0, 3.5, 4.0]  # in the order they were logged
    losses = analysis.score_history(store["client"], trials, "train/loss")
    assert losses.empty and list(losses.columns) == list(analysis.HISTORY_COLUMNS)


def test_outcome_summary(store, study):
    summary = analysis.outcome_summary(analysis.trials_frame(store["client"], study))
    assert list(summary.index) == ["completed", "pruned"]
    assert summary.loc["completed", "trials"] == 1
    assert summary.loc["pruned", "total_epochs"] == 1
    assert summary.loc["completed", "best_score"] == 0.8
