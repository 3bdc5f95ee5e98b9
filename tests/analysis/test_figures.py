"""`robustmsa.analysis.figures`: every figure draws, and renders without pyplot."""

from __future__ import annotations

from pathlib import Path

import pytest
from logged_study import MODALITIES, spectrum
from robustmsa import analysis
from robustmsa.evaluation.figures import ORACLE_PREDICTIONS_LABEL
from robustmsa.evaluation.floor import FLOOR_LABEL

pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
    # MLflow's log_table (the study's own logging, in the fixture) under pandas 3
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes"),
]


def test_the_figures(store, study):
    client = store["client"]
    tables = analysis.trial_tables(client, study)
    oracle = analysis.study_oracle(client, study, "test")
    rows = tables["trial aaaa"]
    assert analysis.curve_protocols(rows) == ["missing", "noise"]
    curves = analysis.spectrum_curves_figure(tables, "missing", oracle=oracle)
    assert len([ax for ax in curves.axes if ax.get_visible()]) == 2  # all, text
    assert [ax.get_title() for ax in curves.axes[:2]] == ["all", "text"]
    one = analysis.spectrum_curves_figure(tables, "noise", scopes=["all"])
    assert len(one.axes) == 1 and len(one.axes[0].lines) == 2
    with pytest.raises(ValueError, match="no joint curve"):
        analysis.spectrum_curves_figure(tables, "joint")
    floored = analysis.spectrum_curves_figure(tables, "noise", scopes=["all"], floor=1.25)
    (line,) = [ln for ln in floored.axes[0].lines if ln.get_label() == FLOOR_LABEL]
    assert line.get_linestyle() == ":" and list(line.get_ydata()) == [1.25, 1.25]
    corr = analysis.spectrum_curves_figure(tables, "missing", oracle=oracle, metric="corr")
    assert ORACLE_PREDICTIONS_LABEL in [ln.get_label() for ln in corr.axes[0].lines]
    maps = analysis.heatmap_figures(rows, title="trial")
    assert len(maps) == len(MODALITIES)
    assert maps[0].axes[0].get_title().startswith("trial: text")
    assert analysis.heatmap_figures(spectrum(0.1, grid=False)) == []

    trials = analysis.trials_frame(client, study)
    history = analysis.score_history(client, trials, since=study.info.start_time)
    for x in ("elapsed_s", "step"):
        fig = analysis.score_history_figure(history, reference=0.75, oracle=0.2, x=x)
        assert len(fig.axes[0].lines) == 2 + 1 + 2  # two trials, the pruned cross, two lines
    space = analysis.search_space(study)
    effects = analysis.param_effects_figure(trials, space, reference=0.75)
    assert len([ax for ax in effects.axes if ax.get_visible()]) == len(space)
    with pytest.raises(ValueError, match="searched no parameter"):
        analysis.param_effects_figure(trials, [])
    compare = analysis.find_study(client, "compare")
    gap = analysis.oracle_gap_figure(analysis.model_comparison_table(client, compare))
    assert [t.get_text() for t in gap.axes[0].get_xticklabels()] == ["reference", "qa_moe"]
    for fig in (curves, maps[0], effects, gap):
        fig.savefig(Path(store["root"]) / "figure.png")  # renders without pyplot
