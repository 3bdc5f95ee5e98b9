"""Spectrum figures (`robustmsa.evaluation.figures`): the plotted arrays and the PNG files."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys

import numpy as np
import pytest
from paths import REPO
from robustmsa.evaluation.figures import (
    ORACLE_LABEL,
    ORACLE_PREDICTIONS_LABEL,
    curve_figure,
    curve_figures,
    curve_series,
    grid_matrix,
    grid_modalities,
    grid_scope,
    heatmap_figure,
    heatmap_figures,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LEVELS = [round(0.1 * i, 1) for i in range(11)]
GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def _row(protocol, mods, level, metric, value):
    return {
        "protocol": protocol,
        "modalities": mods,
        "level": level,
        "metric": metric,
        "value": value,
        "n": 48,
    }


def _cell(modality, eta, lam):
    """A value unique to each (modality, η, λ), so a transposed or shifted matrix shows."""
    return {"text": 0.0, "audio": 100.0}[modality] + 10.0 * eta + lam


def _grid_rows(modalities=("text", "audio")):
    return [
        _row("grid", f"{m}/eta={eta:.2f}", lam, metric, _cell(m, eta, lam) * scale)
        for m in modalities
        for eta in GRID
        for lam in GRID
        for metric, scale in (("mae", 1.0), ("corr", -1.0))
    ]


def _curve_rows(offset=0.0):
    rows = [_row("clean", "all", 0.0, "mae", 0.7 + offset)]
    scopes_of = {"missing": ("all", "text"), "noise": ("all",), "joint": ("all",)}
    for protocol, scopes in scopes_of.items():
        for k, scope in enumerate(scopes):
            rows += [_row(protocol, scope, lv, "mae", 0.7 + offset + k + lv) for lv in LEVELS]
    rows += [
        _row("patterns", p, 0.0, "mae", 0.8 + offset + i / 10)
        for i, p in enumerate(["text", "audio", "text+audio"])
    ]
    return rows


def _png_size(path):
    """``(width, height)`` from the IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --- the arrays that are plotted ------------------------------------------------------------


def test_grid_matrix_cells_are_eta_rows_lambda_columns():
    rows = _grid_rows()
    random.Random(0).shuffle(rows)  # the matrix must not depend on row order
    for modality in ("text", "audio"):
        lambdas, etas, values = grid_matrix(rows, modality, "mae")
        assert lambdas.tolist() == list(GRID)
        assert etas.tolist() == list(GRID)
        assert values.shape == (len(GRID), len(GRID))
        for i, eta in enumerate(GRID):
            for j, lam in enumerate(GRID):
                assert values[i, j] == pytest.approx(_cell(modality, eta, lam))
    _, _, corr = grid_matrix(rows, "text", "corr")
    assert corr[1, 3] == pytest.approx(-_cell("text", 0.25, 0.75))


def test_grid_matrix_missing_cell_is_nan_and_duplicate_raises():
    hole = ("text/eta=0.50", 0.25)
    rows = [r for r in _grid_rows(("text",)) if (r["modalities"], r["level"]) != hole]
    _, _, values = grid_matrix(rows, "text", "mae")
    assert np.isnan(values[2, 1])
    assert np.isfinite(np.delete(values.ravel(), 2 * len(GRID) + 1)).all()
    with pytest.raises(ValueError, match=r"eta=0\.5, lambda=0\.25 appears twice"):
        grid_matrix(rows + [_row("grid", "text/eta=0.50", 0.25, "mae", 1.0)] * 2, "text", "mae")
    with pytest.raises(ValueError, match="'vision'"):
        grid_matrix(rows, "vision", "mae")


def test_grid_scope_parses_and_names_bad_values():
    assert grid_scope("text/eta=0.25") == ("text", 0.25)
    assert grid_scope("audio/eta=0.125") == ("audio", 0.125)
    assert grid_modalities(_grid_rows() + _curve_rows()) == ["text", "audio"]
    for bad in ("text", "text/eta=", "text/lam=0.25", "a/b/eta=0.1", "text/eta=1.50"):
        with pytest.raises(ValueError, match="grid modalities") as info:
            grid_scope(bad)
        assert repr(bad) in str(info.value)


def test_curve_series_sorted_by_level_per_scope():
    rows = _curve_rows()
    random.Random(1).shuffle(rows)
    series = curve_series(rows, "missing", "mae")
    assert set(series) == {"all", "text"}
    levels, values = series["text"]
    assert levels == LEVELS
    assert values == pytest.approx([1.7 + lv for lv in LEVELS])
    assert curve_series(rows, "missing", "corr") == {}
    with pytest.raises(ValueError, match=r"level 0\.3 appears twice"):
        curve_series([*rows, _row("missing", "all", 0.3, "mae", 9.0)], "missing", "mae")


def test_curve_figure_labels_metric_split_and_oracle():
    rows, ref = _curve_rows(), _curve_rows(offset=-0.5)
    fig = curve_figure(
        "missing",
        curve_series(rows, "missing", "mae"),
        curve_series(ref, "missing", "mae"),
        metric="mae",
        split="test",
    )
    (ax,) = [a for a in fig.axes]
    assert "mae" in ax.get_title() and "test" in ax.get_title()
    assert "MAE" in ax.get_ylabel() and "η" in ax.get_xlabel()
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["all", f"{ORACLE_LABEL} (all)", "text", f"{ORACLE_LABEL} (text)"]
    styles = [line.get_linestyle() for line in ax.get_lines()]
    assert styles == ["-", "--", "-", "--"]
    oracle_text = ax.get_lines()[3]
    assert list(oracle_text.get_ydata()) == pytest.approx([1.2 + lv for lv in LEVELS])


@pytest.mark.parametrize(
    ("metric", "label"),
    [("mae", ORACLE_LABEL), ("acc7", ORACLE_LABEL), ("corr", ORACLE_PREDICTIONS_LABEL)],
)
def test_the_oracle_is_called_a_ceiling_only_where_it_is_one(metric, label):
    rows = [{**r, "metric": metric} for r in _curve_rows()]
    fig = curve_figure(
        "missing",
        curve_series(rows, "missing", metric),
        curve_series(rows, "missing", metric),
        metric=metric,
        split="valid",
    )
    assert f"{label} (all)" in [line.get_label() for line in fig.axes[0].get_lines()]


def test_heatmap_figure_plots_the_matrix():
    lambdas, etas, values = grid_matrix(_grid_rows(), "audio", "mae")
    fig = heatmap_figure("audio", lambdas, etas, values, metric="mae", split="valid")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "noise λ" and ax.get_ylabel() == "missing η"
    assert "mae" in ax.get_title() and "valid" in ax.get_title()
    (mesh,) = ax.collections
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(values.shape), values)
    # the coarse grid is annotated with each cell's value
    texts = {t.get_text() for t in ax.texts}
    assert f"{_cell('audio', 0.75, 0.5):.2f}" in texts and len(ax.texts) == values.size


# --- PNG files ------------------------------------------------------------------------------


def test_curve_figures_writes_one_png_per_protocol_and_patterns(tmp_path):
    paths = curve_figures(_curve_rows(), tmp_path / "out", reference_rows=_curve_rows(-0.5))
    assert [p.name for p in paths] == [
        "curves_missing_mae.png",
        "curves_noise_mae.png",
        "curves_joint_mae.png",
        "patterns_mae.png",
    ]
    for p in paths:
        assert p.parent == tmp_path / "out"
        width, height = _png_size(p)
        assert width >= 600 and height >= 400
        assert p.stat().st_size > 10_000  # axes, lines and text: far from an empty image
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)


def test_oracle_curve_changes_the_image(tmp_path):
    with_ref = curve_figures(_curve_rows(), tmp_path / "a", reference_rows=_curve_rows(-0.5))
    without = curve_figures(_curve_rows(), tmp_path / "b")
    again = curve_figures(_curve_rows(), tmp_path / "c")
    assert with_ref[0].read_bytes() != without[0].read_bytes()
    assert without[0].read_bytes() == again[0].read_bytes()  # deterministic rendering


def test_curve_figures_only_protocols_present(tmp_path):
    rows = [r for r in _curve_rows() if r["protocol"] in ("clean", "noise")]
    assert [p.name for p in curve_figures(rows, tmp_path)] == ["curves_noise_mae.png"]
    assert curve_figures([_row("clean", "all", 0.0, "mae", 1.0)], tmp_path / "none") == []


def test_heatmap_figures_one_per_modality(tmp_path):
    rows = _curve_rows() + _grid_rows()
    paths = heatmap_figures(rows, tmp_path, "corr", split="test")
    assert [p.name for p in paths] == ["heatmap_text_corr.png", "heatmap_audio_corr.png"]
    for p in paths:
        _png_size(p)
        assert p.stat().st_size > 10_000
    assert heatmap_figures(_curve_rows(), tmp_path / "none") == []


def test_unknown_metric_and_unsafe_names_raise(tmp_path):
    with pytest.raises(ValueError, match="metric 'mea' is not in the spectrum table"):
        curve_figures(_curve_rows(), tmp_path, metric="mea")
    with pytest.raises(ValueError, match="metric 'mea'"):
        heatmap_figures(_grid_rows(), tmp_path, "mea")
    bad = [_row("missing", "all", lv, "../x", lv) for lv in LEVELS]
    with pytest.raises(ValueError, match=r"metric '\.\./x' cannot be part of a figure file"):
        curve_figures(bad, tmp_path, metric="../x")
    bad_grid = [_row("grid", "te xt/eta=0.00", lv, "mae", lv) for lv in GRID]
    with pytest.raises(ValueError, match="grid modality 'te xt'"):
        heatmap_figures(bad_grid, tmp_path)


SCRIPT = """
import json, sys
from robustmsa.evaluation.figures import curve_figures, heatmap_figures
rows = json.loads(sys.argv[1])
made = curve_figures(rows, sys.argv[2]) + heatmap_figures(rows, sys.argv[2])
print(json.dumps({"pyplot": "matplotlib.pyplot" in sys.modules, "made": len(made)}))
"""


def test_drawing_leaves_pyplot_alone(tmp_path):
    """In a fresh interpreter: pyplot is never imported, so neither its global figure registry
    nor its backend selection (the only way the backend gets switched) is touched. The probe
    itself must not ask ``matplotlib.get_backend()``: that alone imports pyplot."""
    rows = _curve_rows() + _grid_rows(("text",))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(rows), str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"pyplot": False, "made": 5}
