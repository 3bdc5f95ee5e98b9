"""A real MLflow sqlite store per test module, a fresh experiment and run per test."""

from __future__ import annotations

import uuid

import pytest
from mlflow.tracking import MlflowClient
from robustmsa.tracking.runs import start_run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return MlflowClient(f"sqlite:///{root}/m.db"), root


@pytest.fixture
def client(store):
    return store[0]


@pytest.fixture
def experiment(store):
    client, root = store
    name = f"exp-{uuid.uuid4().hex[:8]}"
    return client.create_experiment(name, artifact_location=(root / "art" / name).as_uri())


@pytest.fixture
def run_id(client, experiment):
    return start_run(client, experiment, "trial")
