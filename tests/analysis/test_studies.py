"""`robustmsa.analysis.studies`: the store, the study and what its parent run says."""

from __future__ import annotations

from pathlib import Path

import pytest
from robustmsa import analysis
from robustmsa.errors import RobustMSAError

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # MLflow's log_table (the study's own logging, in the fixture) under pandas 3
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes"),
]


@pytest.mark.parametrize(
    "uri, path",
    [
        ("sqlite:////abs/mlruns.db", "/abs/mlruns.db"),
        ("sqlite:///rel/mlruns.db", "rel/mlruns.db"),
        ("sqlite:///a%20b.db?mode=ro", "a b.db"),
        ("sqlite://", None),
        ("http://127.0.0.1:5000", None),
        ("file:///tmp/mlruns", None),
    ],
)
def test_sqlite_path(uri, path):
    assert analysis.sqlite_path(uri) == (Path(path) if path else None)


def test_a_missing_sqlite_store_is_refused_and_not_created(tmp_path):
    db = tmp_path / "nope" / "mlruns.db"
    with pytest.raises(RobustMSAError, match=f"no MLflow store at {db} "):
        analysis.open_client(f"sqlite:///{db}")
    assert not db.parent.exists()


def test_the_latest_study_by_default(store, study):
    assert study.info.run_id == store["parent"]
    assert analysis.study_kind(study) == "search"
    assert analysis.selected_run_id(study) == store["completed"]
    assert analysis.reference_run_id(study) == store["reference"]
    older = analysis.find_study(store["client"], "search", store["older"])
    assert older.info.run_id == store["older"]


@pytest.mark.parametrize("experiment", ["empty", "no_such_experiment"])
def test_an_empty_or_missing_experiment_is_one_clear_error(store, experiment):
    with pytest.raises(RobustMSAError) as raised:
        analysis.find_study(store["client"], experiment)
    assert str(raised.value) == f"experiment '{experiment}' has no study runs in {store['uri']}"


def test_a_run_that_is_no_study_of_the_experiment_is_refused(store):
    client = store["client"]
    with pytest.raises(RobustMSAError, match="is not the parent run of a study of experiment"):
        analysis.find_study(client, "search", store["completed"])
    with pytest.raises(RobustMSAError, match="is not the parent run of a study of experiment"):
        analysis.find_study(client, "compare", store["parent"])
    with pytest.raises(RobustMSAError, match="not found"):
        analysis.find_study(client, "search", "0" * 32)


def test_a_study_of_another_kind_is_refused(store):
    client = store["client"]
    found = analysis.find_study(client, "compare", kind="compare_models")
    assert found.info.run_id == store["compare"]
    with pytest.raises(RobustMSAError, match=r"has no search study runs .* \(only compare_models"):
        analysis.find_study(client, "compare", kind="search")
    with pytest.raises(RobustMSAError, match="is a compare_models study, not a search study"):
        analysis.find_study(client, "compare", store["compare"], kind="search")


def test_the_search_space_is_read_back_from_the_parent(store, study):
    assert analysis.search_space(study) == store["config"].kind_section.space


def test_the_studys_scores(study):
    assert analysis.study_scores(study) == {"best": 0.8, "reference": 0.75, "oracle": 0.2}
