"""The notebooks of notebooks/: committed without outputs, executed with nbclient (the venv's
own ``python3`` kernel, in the notebooks' folder, each within 2 minutes) against the smoke
studies' MLflow store, and failing on an empty experiment with one clear message while
writing nothing.

The executions against the smoke studies are integration tests (they need both studies,
about 1.5 minutes of training once per session); the stripped-outputs check and the bad-input
runs need no study and stay in the unit tier.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from mlflow.tracking import MlflowClient
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from paths import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ("01_reliability_spectrum", "02_search_analysis", "03_model_comparison")
# Each notebook's default experiment (its parameters cell).
EXPERIMENTS = {
    "01_reliability_spectrum": "qa_moe_search",
    "02_search_analysis": "qa_moe_search",
    "03_model_comparison": "model_comparison",
}
LIMIT_S = 120  # a notebook's whole run, kernel start included
PNG = "image/png"

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


def notebook_path(name: str) -> Path:
    return NOTEBOOKS / f"{name}.ipynb"


def kernel_env(tracking_uri: str, ipython_dir: Path) -> dict[str, str]:
    """This process's environment with the store to read; no Ray address to attach to, and
    IPython's profile folder in the test's temp dir."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env["IPYTHONDIR"] = str(ipython_dir)
    return env


def with_parameters(nb, values: dict) -> None:
    """Papermill's convention: a cell after the ``parameters`` cell overrides its values."""
    index = next(
        i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])
    )
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)


def execute(name: str, env: dict[str, str], parameters: dict | None = None):
    """Run notebook ``name`` as Jupyter would (kernel ``python3``, cwd its folder) without
    saving it; returns the executed notebook and its wall time. Raises CellExecutionError
    (the executed notebook as its ``nb`` attribute) when a cell fails."""
    nb = nbformat.read(notebook_path(name), as_version=4)
    if parameters:
        with_parameters(nb, parameters)
    client = NotebookClient(
        nb,
        timeout=LIMIT_S,
        startup_timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    started = time.monotonic()
    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        exc.nb = nb
        raise
    return nb, time.monotonic() - started


def outputs(nb) -> list[tuple[str, dict]]:
    return [(c.id, o) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def text_of(nb) -> str:
    return "".join(o.get("text", "") for _, o in outputs(nb) if o["output_type"] == "stream")


def images(nb) -> int:
    return sum(1 for _, o in outputs(nb) if PNG in o.get("data", {}))


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` with a digest of its bytes."""
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def parent_runs(tracking_uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"])
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


# ---------------------------------------------------------------------------------------------
# Committed form


def test_every_notebook_is_committed_without_outputs():
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert set(NAMES) <= set(found), found
    for name in found:
        nb = nbformat.read(notebook_path(name), as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{name}: cell {cell.id} has outputs"
                assert cell.execution_count is None, f"{name}: cell {cell.id} was executed"
        assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("name", NAMES)
def test_the_parameters_cell_names_the_experiment_and_the_latest_study(name):
    nb = nbformat.read(notebook_path(name), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    source = tagged[0].source
    assert f'EXPERIMENT = "{EXPERIMENTS[name]}"' in source
    assert "PARENT_RUN_ID = None" in source


# ---------------------------------------------------------------------------------------------
# Bad input: one clear message, a failed run, nothing written


@pytest.fixture
def empty_store(tmp_path) -> str:
    """A sqlite store whose experiments of the notebooks exist but hold no run."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlruns.db'}"
    (tmp_path / "store").mkdir()
    client = MlflowClient(uri)
    for experiment in set(EXPERIMENTS.values()):
        client.create_experiment(experiment, artifact_location=str(tmp_path / "store" / "art"))
    return uri


def failure(name: str, env: dict[str, str]) -> tuple[dict, list]:
    """Run ``name`` expecting a failure; the error output and every error output."""
    with pytest.raises(CellExecutionError) as raised:
        execute(name, env)
    nb = raised.value.nb
    errors = [o for _, o in outputs(nb) if o["output_type"] == "error"]
    assert len(errors) == 1, errors
    return errors[0], errors


@pytest.mark.integration  # a notebook kernel per case
@pytest.mark.parametrize("name", NAMES)
def test_an_empty_experiment_fails_with_one_message_and_writes_nothing(name, empty_store, tmp_path):
    store = Path(empty_store.removeprefix("sqlite:///")).parent
    before = snapshot(NOTEBOOKS, store)
    error, _ = failure(name, kernel_env(empty_store, tmp_path / "ipython"))
    assert error["ename"] == "RobustMSAError"
    assert error["evalue"] == (
        f"experiment '{EXPERIMENTS[name]}' has no study runs in {empty_store}"
    )
    # The message alone: no stack frames of the package.
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
    assert "robustmsa/analysis/" not in shown and "Traceback" not in shown, shown
    assert snapshot(NOTEBOOKS, store) == before


@pytest.mark.integration
def test_a_missing_store_is_named_and_not_created(tmp_path):
    missing = tmp_path / "nowhere" / "mlruns.db"
    before = snapshot(NOTEBOOKS)
    env = kernel_env(f"sqlite:///{missing}", tmp_path / "ipython")
    error, _ = failure("02_search_analysis", env)
    assert error["ename"] == "RobustMSAError"
    assert error["evalue"].startswith(f"no MLflow store at {missing} ")
    assert not missing.exists() and not missing.parent.exists()
    assert snapshot(NOTEBOOKS) == before


# ---------------------------------------------------------------------------------------------
# Against the smoke studies


@pytest.fixture(scope="module")
def smoke_store(smoke_study, smoke_comparison) -> str:
    """The store of both smoke studies (one root, one sqlite file)."""
    assert smoke_comparison.tracking_uri == smoke_study.tracking_uri
    return smoke_study.tracking_uri


def run_against(store: str, name: str, tmp_path: Path, parameters: dict | None = None):
    before = snapshot(NOTEBOOKS)
    try:
        nb, wall_s = execute(name, kernel_env(store, tmp_path / "ipython"), parameters)
    except CellExecutionError as exc:
        pytest.fail(f"{name} failed:\n{exc}")
    assert snapshot(NOTEBOOKS) == before, "the notebook wrote into notebooks/"
    assert wall_s < LIMIT_S, f"{name} took {wall_s:.0f} s"
    assert not [o for _, o in outputs(nb) if o["output_type"] == "error"]
    return nb, wall_s


@pytest.mark.integration
def test_01_draws_the_selected_trials_curves_and_heat_maps(smoke_store, tmp_path):
    nb, _ = run_against(smoke_store, "01_reliability_spectrum", tmp_path)
    study = parent_runs(smoke_store, "qa_moe_search")[0]
    text = text_of(nb)
    assert f"(run {study.info.run_id}, FINISHED)" in text
    selected = study.data.tags["robustmsa.best_trial"]
    assert f"trial {selected}, reference and the Bayes oracle" in text
    # 3 curve protocols; a heat map per modality, of the trial and of its excess: 6.
    assert images(nb) == 3 + 6


@pytest.mark.integration
def test_01_shows_another_trials_validation_rows(smoke_store, tmp_path):
    """A trial the study did not select has no test rows: its validation rows (a pruned
    trial's from its checkpoint), named by the parameters."""
    study = parent_runs(smoke_store, "qa_moe_search")[0]
    client = MlflowClient(smoke_store)
    children = client.search_runs(
        [study.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{study.info.run_id}'",
    )
    others = [
        r
        for r in children
        if "robustmsa.role" not in r.data.tags
        and r.info.run_id != study.data.tags["robustmsa.selected_run_id"]
    ]
    # a pruned one when ASHA pruned one (it depends on the trials' timing)
    run = sorted(others, key=lambda r: r.data.tags.get("robustmsa.outcome") != "pruned")[0]
    parameters = {"PARENT_RUN_ID": study.info.run_id, "RUN_ID": run.info.run_id, "SPLIT": "valid"}
    nb, _ = run_against(smoke_store, "01_reliability_spectrum", tmp_path, parameters)
    text = text_of(nb)
    assert f"trial {run.data.tags['robustmsa.trial_id']}, reference and the Bayes oracle" in text
    assert "no grid rows on the valid split" in text
    assert images(nb) == 2  # missing and noise: the validation protocols


@pytest.mark.integration
def test_02_analyses_the_search_with_a_rebuilt_optuna_study(smoke_store, tmp_path):
    nb, _ = run_against(smoke_store, "02_search_analysis", tmp_path)
    study = parent_runs(smoke_store, "qa_moe_search")[0]
    assert f"(run {study.info.run_id}, FINISHED)" in text_of(nb)
    html = "".join(o.get("data", {}).get("text/html", "") for _, o in outputs(nb))
    assert "model.params.num_experts" in html and "completed" in html
    # two score histories, the parameter effects, the importances
    assert images(nb) == 4


@pytest.mark.integration
def test_03_tables_the_models_with_their_oracle_gap(smoke_store, tmp_path):
    nb, _ = run_against(smoke_store, "03_model_comparison", tmp_path)
    study = parent_runs(smoke_store, "model_comparison")[0]
    assert f"study model_comparison (run {study.info.run_id}, FINISHED)" in text_of(nb)
    table = next(o for cell, o in outputs(nb) if cell == "table")["data"]["text/html"]
    for model in ("reference", "qa_moe", "qa_moe-no-quality-gate", "derl", "promma", "mult"):
        assert f">{model}<" in table
    assert "oracle_excess_mae" in table
    assert images(nb) >= 1 + 3  # the gap, the models' curves, the study's own figures
