"""The integration tier's xdist groups (tests/integration_groups.py): each group runs whole in
one worker, so that its session fixtures (a smoke study, a local Ray) are made once. Checked on
a small suite run by a real pytest-xdist with two workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from integration_groups import SMOKE_GROUP, check_smoke_readers, integration_group
from paths import REPO

# Files named as the project's own: the smoke readers share one worker, every other file keeps
# its tests in one worker.
FILES = (
    "tests/integration/test_faults.py",
    "tests/search/test_study_embedded.py",
    "tests/training/test_trainer.py",
    "tests/integration/test_reproduce.py",
    "tests/notebooks/test_notebooks.py",
)
TESTS_PER_FILE = 3

TEST_FILE = """
import json, os
from pathlib import Path

def record():
    with open(Path(os.environ["GROUPS_OUT"]) / os.urandom(8).hex(), "w") as out:
        json.dump({"file": __file__, "worker": os.environ["PYTEST_XDIST_WORKER"]}, out)

"""

CONFTEST = f"""
import sys
sys.path.insert(0, {str(REPO / "tests")!r})
from integration_groups import make_scheduler

def pytest_xdist_make_scheduler(config, log):
    return make_scheduler(config, log)
"""


def test_smoke_readers_share_a_group_and_other_files_are_their_own():
    assert integration_group("tests/notebooks/test_notebooks.py::test_x[a]") == SMOKE_GROUP
    assert integration_group("tests/integration/test_mlflow_ui.py::test_x") == SMOKE_GROUP
    faults = "tests/integration/test_faults.py"
    assert integration_group(f"{faults}::test_a") == integration_group(f"{faults}::test_b")
    assert integration_group(f"{faults}::test_a") != integration_group("tests/x.py::test_a")


def test_a_smoke_reader_outside_the_smoke_files_is_refused_by_name():
    reader = SimpleNamespace(nodeid="tests/search/test_x.py::test_y", fixturenames=["smoke_study"])
    inside = SimpleNamespace(
        nodeid="tests/integration/test_reproduce.py::test_z", fixturenames=["smoke_comparison"]
    )
    check_smoke_readers([inside])
    with pytest.raises(pytest.UsageError, match=r"tests/search/test_x.py::test_y: reads a smoke"):
        check_smoke_readers([inside, reader])


def test_each_group_runs_whole_in_one_of_two_workers(tmp_path):
    suite, out = tmp_path / "suite", tmp_path / "out"
    out.mkdir()
    for name in FILES:
        path = suite / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tests = "".join(f"def test_{i}():\n    record()\n\n" for i in range(TESTS_PER_FILE))
        path.write_text(TEST_FILE + tests)
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "pytest.ini").write_text("[pytest]\naddopts = --import-mode=importlib\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p",
         "no:cacheprovider"],
        cwd=suite, env={**os.environ, "GROUPS_OUT": str(out)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(p.read_text()) for p in out.iterdir()]
    assert len(records) == len(FILES) * TESTS_PER_FILE
    workers: dict[str, set[str]] = {}
    for record in records:
        group = integration_group(str(Path(record["file"]).relative_to(suite)))
        workers.setdefault(group, set()).add(record["worker"])
    assert len(workers) == len(FILES) - 1  # the two smoke readers are one group
    assert all(len(found) == 1 for found in workers.values()), workers
    assert len(set().union(*workers.values())) == 2  # both workers were used
