"""`robustmsa.analysis.images`: the PNG figures a run logged."""

from __future__ import annotations

import pytest
from robustmsa import analysis

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # MLflow's log_table (the study's own logging, in the fixture) under pandas 3
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes"),
]


def test_a_run_without_figures_has_no_images(store):
    client = store["client"]
    compare = analysis.find_study(client, "compare")
    assert analysis.logged_images(client, compare.info.run_id, "comparison") == {}
