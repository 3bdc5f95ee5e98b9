"""`robustmsa.analysis.names`: the names mirrored from the modules that log them agree with
them."""

from __future__ import annotations

from robustmsa import analysis


def test_the_names_agree_with_what_the_study_logs():
    from robustmsa.search import study, trial
    from robustmsa.search.kinds import base
    from robustmsa.training import loop

    assert analysis.ROLE_TAG == trial.ROLE_TAG
    assert analysis.REFERENCE_ROLE == study.REFERENCE_ROLE
    assert analysis.OBJECTIVE == loop.OBJECTIVE
    assert analysis.SEARCH_METRIC == study.SEARCH_METRIC
    assert analysis.ORACLE_MODEL == base.ORACLE
