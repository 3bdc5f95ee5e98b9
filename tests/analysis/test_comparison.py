"""`robustmsa.analysis.comparison`: a compare_models study's table."""

from __future__ import annotations

import numpy as np
import pytest
from robustmsa import analysis
from robustmsa.errors import RobustMSAError

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # MLflow's log_table (the study's own logging, in the fixture) under pandas 3
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes"),
]


def test_the_model_comparison_table(store):
    client = store["client"]
    compare = analysis.find_study(client, "compare")
    table = analysis.model_comparison_table(client, compare)
    assert list(table.index) == ["reference", "qa_moe", "oracle"]
    assert list(table.columns) == [
        (s, k)
        for s in ("valid", "test")
        for k in ("spectrum_mae", "oracle_excess_mae", "clean_mae")
    ]
    assert table.loc["qa_moe", ("test", "oracle_excess_mae")] == pytest.approx(0.3)
    assert np.isnan(table.loc["oracle", ("valid", "oracle_excess_mae")])
    every = analysis.model_comparison_table(client, compare, summaries=())
    assert ("valid", "missing/all/mean_mae") in every.columns
    with pytest.raises(RobustMSAError, match=r"has no comparison/models\.parquet"):
        analysis.model_comparison_table(client, analysis.find_study(client, "search"))
