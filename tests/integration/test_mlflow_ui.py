"""The MLflow UI of a smoke study, in a real browser: headless Debian Chromium driven by
Playwright (`make browser` / scripts/install_browser.sh installs it where absent).

The link the study prints opens the runs view (not GenAI traces) with the study's parent run
and its trials nested under it; the compare view of two runs shows the searched parameters
and draws a reliability-spectrum curve of both. Screenshots go to ``$PYTEST_ARTIFACTS`` (else
``test-artifacts/``)/mlflow_ui.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from paths import REPO
from playwright.sync_api import Page, expect, sync_playwright
from robustmsa.tracking.runs import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, runs_view_url

pytestmark = [
    pytest.mark.integration,
    pytest.mark.browser,
    # MLflow's own sqlalchemy store triggers this; it says nothing about robustmsa.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

SEARCHED = (
    "model.params.num_experts",
    "model.params.top_k",
    "model.params.uncertainty_weight",
    "training.lr",
)
PREFERRED_CURVE = "spectrum/missing/all/mae"
FIRST_LOAD_MS = 90_000  # the UI's bundle and first queries, on two busy cores
WAIT_MS = 45_000
VIEWPORT = {"width": 1920, "height": 1200}


def chromium_path() -> str:
    found = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not found:
        pytest.fail("no Chromium on PATH: `make browser` (scripts/install_browser.sh) installs it")
    return found


@pytest.fixture(scope="module")
def screenshots() -> Path:
    out = Path(os.environ.get("PYTEST_ARTIFACTS") or REPO / "test-artifacts") / "mlflow_ui"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser profile per test: nothing remembered of an earlier visit."""
    context = browser.new_context(viewport=VIEWPORT)
    yield context.new_page()
    context.close()


def shoot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 0
    return path


def run_link(page: Page, run_id: str):
    return page.locator(f'a[href$="/runs/{run_id}"]')


def test_the_printed_link_opens_the_runs_of_the_study(
    smoke_study, smoke_mlflow_ui, page, screenshots
):
    client = MlflowClient(smoke_mlflow_ui)
    experiment = client.get_experiment_by_name(smoke_study.experiment)
    assert experiment.tags.get(EXPERIMENT_KIND_TAG) == MODEL_TRAINING_KIND
    eid = experiment.experiment_id
    # The study printed the runs view of its experiment for the `mlflow ui` it names.
    assert runs_view_url("http://127.0.0.1:5000", eid) in smoke_study.stdout
    runs = client.search_runs([eid], max_results=1000)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == "qa_moe_search"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert any(c.info.run_name.startswith("trial_") for c in children)

    page.goto(runs_view_url(smoke_mlflow_ui, eid))
    parent_link = run_link(page, parent.info.run_id)
    expect(parent_link).to_have_text("qa_moe_search", timeout=FIRST_LOAD_MS)
    assert f"/experiments/{eid}/runs" in page.url
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    shoot(page, screenshots, "01_runs_view")
    # Trials are nested under the study's row: expand it.
    row = page.locator("[role=row]", has=parent_link)
    row.locator("button[data-component-id*=runnamecellrenderer]").click()
    for child in children:
        expect(run_link(page, child.info.run_id)).to_have_text(child.info.run_name, timeout=WAIT_MS)
    shoot(page, screenshots, "02_runs_view_expanded")


def spectrum_pair(client: MlflowClient, children) -> tuple[list, str]:
    """Two child runs with a common ``spectrum/`` curve, trials first, and that curve's key."""
    ranked = sorted(
        children, key=lambda r: (not r.info.run_name.startswith("trial_"), r.info.run_name)
    )
    with_curves = [r for r in ranked if any(k.startswith("spectrum/") for k in r.data.metrics)]
    assert len(with_curves) >= 2, [r.info.run_name for r in children]
    pair = with_curves[:2]
    common = set(pair[0].data.metrics) & set(pair[1].data.metrics)
    keys = sorted(k for k in common if re.fullmatch(r"spectrum/[^/]+/[^/]+/mae", k))
    assert keys, sorted(common)
    key = PREFERRED_CURVE if PREFERRED_CURVE in keys else keys[0]
    for run in pair:  # a curve over the spectrum: one point per level, step = level * 100
        steps = {m.step for m in client.get_metric_history(run.info.run_id, key)}
        assert {0, 100} <= steps and len(steps) >= 3, (run.info.run_name, sorted(steps))
    return pair, key


# Scrolls the compare page's metric table (virtualized: only the rows near the visible ones
# exist) until the row of metric ``key`` exists, then brings it to the top of the table. The
# table is two grids side by side, names (``grid``) and values; only the values grid scrolls
# for the user, and the names grid does not always follow it: it is aligned here.
SCROLL_TO_METRIC = """(grid, key) => {
    let box = grid.parentElement;
    while (box && box.querySelectorAll('.ReactVirtualized__Grid').length < 2) {
        box = box.parentElement;
    }
    const grids = box ? [...box.querySelectorAll('.ReactVirtualized__Grid')] : [grid];
    const scroller =
        grids.find(g => ['auto', 'scroll'].includes(getComputedStyle(g).overflowY)) || grid;
    const link = [...grid.querySelectorAll('a[title="Plot chart"]')]
        .find(a => a.textContent.trim() === key);
    const before = scroller.scrollTop;
    if (key === null) {
        // align only
    } else if (link) {
        scroller.scrollTop = Math.max(0, parseFloat(link.closest('[style*="top"]').style.top) - 45);
    } else {
        scroller.scrollTop = before + 150;
    }
    grids.forEach(g => { if (g !== scroller) g.scrollTop = scroller.scrollTop; });
    if (link || key === null) return 'found';
    return scroller.scrollTop > before ? 'scrolled' : 'end';
}"""


def test_the_compare_view_draws_a_spectrum_curve_and_the_searched_parameters(
    smoke_study, smoke_mlflow_ui, page, screenshots
):
    client = MlflowClient(smoke_mlflow_ui)
    eid = client.get_experiment_by_name(smoke_study.experiment).experiment_id
    runs = client.search_runs([eid], max_results=1000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    pair, key = spectrum_pair(client, children)
    ids = [r.info.run_id for r in pair]
    # MLflow 3.17's compare route (Routes.getCompareRunPageRoute), in the model-training view.
    page.goto(
        f"{smoke_mlflow_ui}/#/compare-runs?runs={json.dumps(ids)}"
        f"&experiments={json.dumps([eid])}&workflowType=machine_learning"
    )
    expect(page.get_by_text(f"Comparing {len(ids)} Runs", exact=False)).to_be_visible(
        timeout=FIRST_LOAD_MS
    )
    for run in pair:
        expect(page.get_by_text(run.info.run_id, exact=True).first).to_be_visible(timeout=WAIT_MS)
    params = page.locator("table.mlflow-compare-run-table")
    for name in SEARCHED:
        row = params.locator("tr", has=page.get_by_text(name, exact=True))
        expect(row.first).to_be_attached(timeout=WAIT_MS)
        for run in pair:  # each run's own sampled value (a reference run has none)
            if name in run.data.params:
                expect(row.first).to_contain_text(run.data.params[name])
    # Only the parameters that differ: those the search sampled.
    page.get_by_role("switch", name="Parameters - Show diff only").click()
    differing = [n for n in SEARCHED if len({r.data.params.get(n) for r in pair}) > 1]
    assert differing, [r.data.params for r in pair]
    for name in differing:
        expect(params.get_by_text(name, exact=True).first).to_be_visible(timeout=WAIT_MS)
    params.get_by_text(differing[-1], exact=True).first.scroll_into_view_if_needed()
    shoot(page, screenshots, "03_compare_parameters")

    # The spectrum metric in the compare page's metric list (a virtualized table), then its plot.
    plot_links = page.locator('a[title="Plot chart"]')
    expect(plot_links.first).to_be_attached(timeout=WAIT_MS)
    curve_link = plot_links.filter(has_text=re.compile(f"^{re.escape(key)}$"))
    grid = page.locator(".ReactVirtualized__Grid", has=plot_links.first).first
    while (where := grid.evaluate(SCROLL_TO_METRIC, key)) != "found":
        assert where == "scrolled", f"{key} is not in the compare page's metrics"
        page.wait_for_timeout(100)
    page.wait_for_timeout(300)
    grid.evaluate(SCROLL_TO_METRIC, None)  # names next to their values
    grid.scroll_into_view_if_needed()
    expect(curve_link).to_be_in_viewport(timeout=WAIT_MS)
    shoot(page, screenshots, "04_compare_metrics")
    curve_link.click()

    plot = page.locator(".js-plotly-plot")
    expect(plot.first).to_be_visible(timeout=WAIT_MS)
    for run in pair:  # one curve per run (the chart's legend is HTML beside the plot)
        legend = page.get_by_text(f"{run.info.run_name} ({key})", exact=True)
        expect(legend.first).to_be_visible(timeout=WAIT_MS)
    expect(plot.first.locator(".scatterlayer .trace").nth(len(pair) - 1)).to_be_attached()
    # Over the steps 0..100: the corruption level in percent.
    expect(plot.first.locator(".xtitle")).to_have_text("Step")
    expect(page.get_by_text("(step=100)").first).to_be_visible()
    shoot(page, screenshots, "05_spectrum_curve")
    assert sorted(p.name for p in screenshots.glob("0[3-5]_*.png")) == [
        "03_compare_parameters.png",
        "04_compare_metrics.png",
        "05_spectrum_curve.png",
    ]
