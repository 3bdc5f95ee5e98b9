"""The smoke studies that tests read, as session fixtures shared by every test directory.

A conftest's fixtures reach only the tests under its folder, so each folder that needs these
imports them into its conftest (``from smoke_studies import smoke_study, ...``). pytest then
holds one fixture per conftest, each with its own session cache; the runs themselves are
cached here, per session (its base temp dir), so each study runs at most once per session
however many folders use it.

Both studies write one root, hence one sqlite store (``mlruns.db``, an experiment each) and
one artifact folder: one MLflow server serves both. The comparison study runs after the
search study (its fixture requests ``smoke_study``), so the search study's experiment and runs
are the same whichever tests run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from servers import SmokeStudy, run_smoke_study

COMPARISON_SCRIPT = "studies/model_comparison.py"
COMPARISON_EXPERIMENT = "model_comparison"  # tracking.experiment of its config

_roots: dict[Path, Path] = {}  # the session's base temp dir -> its smoke studies' root
# (base temp dir, study) -> its SmokeStudy, or the error it failed with (not retried)
_runs: dict[tuple[Path, str], SmokeStudy | Exception] = {}


def _root(tmp_path_factory) -> Path:
    """The one root of the session's smoke studies."""
    base = tmp_path_factory.getbasetemp()
    if base not in _roots:
        _roots[base] = tmp_path_factory.mktemp("smoke-study")
    return _roots[base]


def _once(tmp_path_factory, study: str, run: Callable[[], SmokeStudy]) -> SmokeStudy:
    key = (tmp_path_factory.getbasetemp(), study)
    if key not in _runs:
        try:
            _runs[key] = run()
        except Exception as exc:
            _runs[key] = exc
    found = _runs[key]
    if isinstance(found, Exception):
        raise found
    return found


def search_smoke_study(tmp_path_factory) -> SmokeStudy:
    """``studies/qa_moe_search.py --smoke-test`` in the session's root, run once per session
    (a failure too is not retried)."""
    return _once(tmp_path_factory, "search", lambda: run_smoke_study(_root(tmp_path_factory)))


def comparison_smoke_study(tmp_path_factory) -> SmokeStudy:
    """``studies/model_comparison.py --smoke-test`` in the same root, after the search study,
    run once per session. Its output goes to ``root/study.log`` (replacing the search study's
    log; each `SmokeStudy` keeps its own ``stdout``)."""
    search_smoke_study(tmp_path_factory)

    def run() -> SmokeStudy:
        study = run_smoke_study(_root(tmp_path_factory), script=COMPARISON_SCRIPT)
        return dataclasses.replace(study, experiment=COMPARISON_EXPERIMENT)

    return _once(tmp_path_factory, "comparison", run)


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> SmokeStudy:
    """``studies/qa_moe_search.py --smoke-test`` run once per session, embedded (local Ray,
    sqlite store), as `make study` would: `servers.SmokeStudy` says where its outputs are
    (``tracking_uri``, ``artifacts``, ``experiment``) and what it printed. Read-only for
    its users: every test of the session sees the same store."""
    return search_smoke_study(tmp_path_factory)


@pytest.fixture(scope="session")
def smoke_comparison(smoke_study, tmp_path_factory) -> SmokeStudy:
    """``studies/model_comparison.py --smoke-test`` (study.kind compare_models) run once per
    session into the smoke study's root: the same ``tracking_uri`` and ``artifacts``,
    experiment ``model_comparison``. Read-only for its users."""
    return comparison_smoke_study(tmp_path_factory)
