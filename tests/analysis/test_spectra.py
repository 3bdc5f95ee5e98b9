"""`robustmsa.analysis.spectra`: the spectrum rows runs logged, and their curves' means."""

from __future__ import annotations

import pytest
from robustmsa import analysis
from robustmsa.errors import RobustMSAError

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # MLflow's log_table (the study's own logging, in the fixture) under pandas 3
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes"),
]


def test_trial_tables_curve_summary_and_excess(store, study):
    client = store["client"]
    tables = analysis.trial_tables(client, study)
    assert list(tables) == ["trial aaaa", "reference"]
    valid = analysis.trial_tables(client, study, store["pruned"], "valid")
    assert list(valid) == ["trial bbbb"]  # from its checkpoint; the reference has no valid
    with pytest.raises(RobustMSAError, match="logged no test spectrum"):
        analysis.trial_tables(client, study, store["pruned"])
    assert analysis.study_floor(study, "test") == {"mae": 1.3, "acc7": 0.2}
    assert analysis.study_floor(study, "valid") == {}
    oracle = analysis.study_oracle(client, study, "test")
    summary = analysis.curve_summary({**tables, "oracle": oracle, "none": None})
    assert list(summary.columns) == ["trial aaaa", "reference", "oracle"]
    assert summary.index[0] == "spectrum_score"
    assert "missing/text" in summary.index and "patterns" in summary.index
    assert not any(k.startswith("grid/") for k in summary.index)
    assert summary.loc["missing/all", "trial aaaa"] == pytest.approx(0.6 + 0.5)
    above = analysis.excess_rows(tables["trial aaaa"], oracle)
    assert len(above) == len(oracle)
    assert all(r["value"] == pytest.approx(0.5) for r in above)
