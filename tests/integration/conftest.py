"""Session fixtures of the integration tier: one embedded smoke study, shared by every test that
reads a study's MLflow store (the browser test of the MLflow UI, notebook tests), and a real
MLflow server on that store.

``smoke_study`` and ``smoke_comparison`` (the compare_models smoke study, same store) live in
tests/smoke_studies.py, imported here and by tests/notebooks/conftest.py: each study runs once
per session whichever folders use it."""

from __future__ import annotations

import pytest
from servers import mlflow_server
from smoke_studies import smoke_comparison, smoke_study

__all__ = ["smoke_comparison", "smoke_mlflow_ui", "smoke_study"]


@pytest.fixture(scope="session")
def smoke_mlflow_ui(smoke_study, tmp_path_factory) -> str:
    """An MLflow server (``mlflow server``, UI included) on the smoke study's store; its base
    URL, e.g. ``http://127.0.0.1:41234``."""
    with mlflow_server(
        tmp_path_factory.mktemp("smoke-mlflow-ui"), smoke_study.tracking_uri, smoke_study.artifacts
    ) as uri:
        yield uri
