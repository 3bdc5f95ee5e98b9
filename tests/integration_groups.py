"""The integration tier's xdist groups (`make test`: ``-n 2 --dist loadgroup``).

Each group runs whole in one worker, so that its session fixtures (the smoke studies, the
local Ray) are made once, in that worker; a worker that finishes a group takes the next, the
groups with more tests first (xdist's scope order). The tier is CPU-bound on two cores (Ray
and server start-ups, trial processes, studies), so groups are kept small, file by file where
nothing is shared, for the two workers to end about together.
"""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScopeScheduling

# The files whose tests read the session's smoke studies (tests/smoke_studies.py): one group,
# so that the studies run once. Each other file is a group of its own (its module fixtures
# are made once); a worker makes the session's local Ray when a file of it needs one.
SMOKE_FILES = (
    "tests/integration/test_comparison_study.py",
    "tests/integration/test_mlflow_ui.py",
    "tests/integration/test_reproduce.py",
    "tests/notebooks/",
)
SMOKE_GROUP = "smoke"
SMOKE_FIXTURES = {"smoke_study", "smoke_comparison"}


def integration_group(nodeid: str) -> str:
    """The group of an integration test, by its node id (``tests/...::name``): SMOKE_GROUP or
    its file."""
    if nodeid.startswith(SMOKE_FILES):
        return SMOKE_GROUP
    return nodeid.split("::", 1)[0]


def check_smoke_readers(items) -> None:
    """`pytest.UsageError` naming any test that reads a smoke study outside SMOKE_FILES: in a
    worker of its own it would run the studies a second time."""
    strays = [
        item.nodeid
        for item in items
        if SMOKE_FIXTURES & set(getattr(item, "fixturenames", ()))
        and integration_group(item.nodeid) != SMOKE_GROUP
    ]
    if strays:
        raise pytest.UsageError(
            f"{', '.join(strays)}: reads a smoke study; add its file to SMOKE_FILES in "
            "tests/integration_groups.py"
        )


class IntegrationGroups(LoadScopeScheduling):
    """xdist's scope scheduler with `integration_group` as the scope.

    xdist's own loadgroup reads a test's group from a suffix it appends to the node id, which
    pytest 9.2 no longer lets a plugin set (the node id is derived from ``Node._id``): every
    test then went to any worker, and both workers ran the smoke studies. Subclassing the scope
    scheduler is xdist's documented way to group tests."""

    def _split_scope(self, nodeid: str) -> str:
        return integration_group(nodeid)


def make_scheduler(config, log) -> IntegrationGroups | None:
    """`IntegrationGroups` for ``--dist loadgroup``; None (xdist's own choice) otherwise."""
    if config.getvalue("dist") != "loadgroup":
        return None
    return IntegrationGroups(config, log)
