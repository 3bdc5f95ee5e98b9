"""Shared fixtures of the cluster-file tests: the pinned Ray version and the KubeRay CRD schemas
that the manifests of ``cluster/kuberay`` target (``fixtures/kuberay-<version>``, SOURCE.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from paths import REPO

KUBERAY_VERSION = "1.7.0"
CRD_DIR = Path(__file__).parent / "fixtures" / f"kuberay-{KUBERAY_VERSION}"


@pytest.fixture(scope="session")
def ray_version() -> str:
    """The Ray version pinned in pyproject.toml ``[project].dependencies``."""
    text = (REPO / "pyproject.toml").read_text()
    found = re.findall(r'"ray\[[^\]]*\]==([0-9][0-9.]*)"', text)
    assert len(found) == 1, f"expected one pinned ray[...]==X in pyproject.toml, got {found}"
    return found[0]


@pytest.fixture(scope="session")
def kuberay_version() -> str:
    return KUBERAY_VERSION


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    return CRD_DIR


@pytest.fixture(scope="session")
def crd_schemas():
    from robustmsa.cluster import load_crd_schemas

    return load_crd_schemas(CRD_DIR)
