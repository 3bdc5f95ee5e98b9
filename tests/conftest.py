"""Shared fixtures: the tiny synthetic dataset (made once per session) and offline settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from integration_groups import check_smoke_readers, make_scheduler

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Every worker line keeps its own pid: Ray's driver otherwise folds similar lines of several
# processes into one "[repeated Nx across cluster]" under the first pid, and a test that tells
# trial processes apart by pid (tests/search/test_console.py) then reads another test's pid.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def pytest_configure(config):
    # The frame cache of every dataset the tests open goes to this run's temporary directory,
    # not the user's ~/.cache (Ray workers started by the tests inherit it).
    if "ROBUSTMSA_FRAME_CACHE" not in os.environ:
        import tempfile

        config._robustmsa_frame_cache = tempfile.mkdtemp(prefix="robustmsa-frames-")
        os.environ["ROBUSTMSA_FRAME_CACHE"] = config._robustmsa_frame_cache


def pytest_xdist_make_scheduler(config, log):
    """The integration tier's groups, each whole in one worker (tests/integration_groups.py)."""
    return make_scheduler(config, log)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the marker added here
def pytest_collection_modifyitems(config, items):
    # A test on the session's local Ray starts a Ray head, and one on a smoke study runs a
    # study script: the integration tier, whatever its folder (`make test-unit` runs what needs
    # no Ray, server, browser, kernel or study).
    heavy = {"local_ray", "smoke_study", "smoke_comparison"}
    for item in items:
        if heavy & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    check_smoke_readers(items)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_ray(request):
    """A unit test that starts Ray (a bare ``.remote()`` initialises one, and could attach to
    another cluster on the machine) fails here: it belongs on the session's local Ray. Only a
    Ray it started counts (an integration test of the same process may have left the session's
    running)."""

    def running() -> bool:
        ray = sys.modules.get("ray")
        return ray is not None and ray.is_initialized()

    before = running()
    yield
    if request.node.get_closest_marker("integration") is None and not before and running():
        sys.modules["ray"].shutdown()
        pytest.fail("this test started Ray: give it the local_ray fixture (integration tier)")


def pytest_unconfigure(config):
    made = getattr(config, "_robustmsa_frame_cache", None)
    if made:
        import shutil

        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Torch in the test process runs one intra-op thread. The tests' tensors are small, and
    on a busy 2-core machine (Ray trials, servers) a second thread spin-waits on a core that
    another process holds: learning tests ran 10-20x slower with it. Ray's trial processes
    get ``OMP_NUM_THREADS=1`` from Ray anyway."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The synthetic 'tiny' preset, seed 0, written once for the whole session."""
    from robustmsa.data.synthetic import generate

    return generate("tiny", tmp_path_factory.mktemp("data") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_splits(tiny_dataset):
    from robustmsa.data.parquet import open_dataset

    return open_dataset(tiny_dataset)


@pytest.fixture(scope="session")
def local_ray():
    """A private local Ray for the whole session (never a bare init: that could attach to
    another cluster on the machine). Four logical CPUs on two cores, as docs/stack.md measured."""
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()
