"""The study's experiment is of MLflow's model-training kind, and the links the product prints
open the MLflow UI on its runs, not on GenAI traces (the browser test checks them for real:
tests/integration/test_mlflow_ui.py)."""

from __future__ import annotations

import uuid

import pytest
from robustmsa.cli import format_result
from robustmsa.tracking.runs import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    ensure_experiment,
    runs_view_url,
)

# MLflow's own sqlalchemy store triggers this; it says nothing about robustmsa.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


def test_the_kind_tag_is_mlflows_model_training_kind():
    # The UI's ExperimentKind enum in MLflow 3.17 (mlflow/server/js/build/static/js/main.*.js).
    assert (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND) == (
        "mlflow.experimentKind",
        "custom_model_development",
    )


def test_a_new_experiment_is_created_with_the_kind(store):
    client, root = store
    name = f"study-{uuid.uuid4().hex[:8]}"
    experiment_id = ensure_experiment(client, name, root / "mlartifacts")
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == name
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert experiment.artifact_location == (root / "mlartifacts" / name).resolve().as_uri()
    # Found again: the same experiment, nothing new.
    assert ensure_experiment(client, name, root / "mlartifacts") == experiment_id


def test_an_existing_experiment_without_the_kind_gets_it(client, experiment):
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(experiment).tags
    name = client.get_experiment(experiment).name
    assert ensure_experiment(client, name, None) == experiment
    assert client.get_experiment(experiment).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND


def test_a_kind_someone_chose_stays(client, experiment):
    client.set_experiment_tag(experiment, EXPERIMENT_KIND_TAG, "finetuning")
    ensure_experiment(client, client.get_experiment(experiment).name, None)
    assert client.get_experiment(experiment).tags[EXPERIMENT_KIND_TAG] == "finetuning"


@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:5000", "http://127.0.0.1:5000/", "https://mlflow.example.org/"]
)
def test_the_runs_view_url(base):
    assert runs_view_url(base, "17") == (
        f"{base.rstrip('/')}/#/experiments/17/runs?workflowType=machine_learning"
    )


def _result(tracking_uri: str):
    from robustmsa.search.study import StudyResult

    return StudyResult(
        parent_run_id="p" * 32,
        experiment_id="4",
        tracking_uri=tracking_uri,
        storage_path="/tmp/ray_results",
    )


def _see_them(tracking_uri: str) -> str:
    (line,) = [
        ln for ln in format_result(_result(tracking_uri), "qa_moe_search").splitlines()
        if ln.startswith("See them:")
    ]  # fmt: skip
    return line


def test_a_server_study_prints_the_runs_view_of_its_experiment():
    line = _see_them("http://10.0.0.5:5000")
    assert (
        line == "See them: http://10.0.0.5:5000/#/experiments/4/runs?workflowType=machine_learning"
    )


def test_an_embedded_study_prints_the_ui_command_and_the_runs_view():
    line = _see_them("sqlite:////data/study/mlruns.db")
    assert (
        " ui --backend-store-uri sqlite:////data/study/mlruns.db --host 127.0.0.1 --port 5000"
        in line
    )
    assert line.endswith(
        "(then open http://127.0.0.1:5000/#/experiments/4/runs?workflowType=machine_learning)"
    )
