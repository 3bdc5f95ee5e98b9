"""A logged run's figures, drawn when they are wanted rather than for every trial.

A study logs numbers for every trial and draws figures only for the trial it selects and its
reference model (`robustmsa.search.study_evaluation`); `report_run` draws any other run's later
(``robustmsa report --run-id RUN``) from what the run logged, without retraining or
re-evaluating:

- the validation rows: the run's ``spectrum/spectrum_valid.parquet`` (a completed trial), else
  the best epoch's rows stored in its logged checkpoint (``checkpoint/spectrum_valid.json``: a
  pruned trial ends with what it logged while training);
- the test rows: the run's ``spectrum/spectrum_test.parquet`` when its test split was evaluated;
- the ceiling: the study's oracle on the same points, logged once on the parent run
  (``spectrum/oracle_<split>.parquet``), else the run's own copy (runs of earlier versions
  logged it per trial); none for real datasets;
- the floor: the constant predictor's metrics the study logged on its parent run
  (`robustmsa.evaluation.floor`), real data included.

The figures go to the run under ``figures/<split>/`` and, with ``out_dir``, to
``out_dir/<split>/``. A run with neither table nor checkpoint (a study's parent, a trial that
failed before its first epoch) is refused before anything is written.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from robustmsa.errors import RobustMSAError
from robustmsa.evaluation.logged import CHECKPOINT_ARTIFACTS
from robustmsa.tracking.runs import PARENT_TAG
from robustmsa.training.checkpoint import ROWS_FILE

REPORT_SPLITS = ("valid", "test")


def get_run(client: MlflowClient, run_id: str) -> Run:
    """The run ``run_id``; `RobustMSAError` naming it when the store has no such run."""
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise RobustMSAError(f"run {run_id!r}: not found ({exc.message})") from exc


def _artifact_files(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    try:
        return {a.path for a in client.list_artifacts(run_id, folder)}
    except (MlflowException, OSError):
        return set()


def logged_table(client: MlflowClient, run_id: str, name: str) -> list[dict] | None:
    """The rows of the run's ``spectrum/<name>.parquet`` (``spectrum_valid``, ``oracle_test``,
    ...), or None when the run has no such artifact."""
    path = f"spectrum/{name}.parquet"
    if path not in _artifact_files(client, run_id, "spectrum"):
        return None
    with tempfile.TemporaryDirectory(prefix="robustmsa-report-") as tmp:
        return pq.read_table(client.download_artifacts(run_id, path, tmp)).to_pylist()


def checkpoint_rows(client: MlflowClient, run_id: str) -> list[dict] | None:
    """The best epoch's validation rows stored in the run's logged checkpoint, or None."""
    path = f"{CHECKPOINT_ARTIFACTS}/{ROWS_FILE}"
    if path not in _artifact_files(client, run_id, CHECKPOINT_ARTIFACTS):
        return None
    with tempfile.TemporaryDirectory(prefix="robustmsa-report-") as tmp:
        return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text()) or None


def study_oracle(client: MlflowClient, run: Run) -> dict[str, list[dict] | None]:
    """The oracle's rows per split for ``run``: its parent's (the study's), else its own."""
    parent = run.data.tags.get(PARENT_TAG)
    oracle = {}
    for split in REPORT_SPLITS:
        rows = logged_table(client, parent, f"oracle_{split}") if parent else None
        oracle[split] = rows or logged_table(client, run.info.run_id, f"oracle_{split}")
    return oracle


def run_tables(client: MlflowClient, run: Run) -> dict[str, list[dict]]:
    """The spectrum rows ``run`` logged, per split (module docstring); `RobustMSAError` when
    it logged none."""
    run_id = run.info.run_id
    tables = {}
    valid = logged_table(client, run_id, "spectrum_valid") or checkpoint_rows(client, run_id)
    if valid:
        tables["valid"] = valid
    test = logged_table(client, run_id, "spectrum_test")
    if test:
        tables["test"] = test
    if not tables:
        what = "a study's parent run" if PARENT_TAG not in run.data.tags else "this run"
        raise RobustMSAError(
            f"run {run_id!r}: no logged spectrum and no checkpoint (artifact "
            f"'{CHECKPOINT_ARTIFACTS}/{ROWS_FILE}'); {what} has nothing to draw: give a trial "
            "run that finished at least one epoch"
        )
    return tables


def report_run(
    client: MlflowClient,
    run_id: str,
    *,
    oracle: dict[str, list[dict] | None] | None = None,
    out_dir: Path | None = None,
) -> dict[str, list[Path]]:
    """Draw ``run_id``'s figures from its logged tables and log them (module docstring);
    returns the figure files per split. ``oracle``: the study's oracle rows per split when the
    caller has them (else read from the parent run)."""
    from robustmsa.evaluation.floor import logged_floor
    from robustmsa.tracking.spectrum import log_figures

    run = get_run(client, run_id)
    tables = run_tables(client, run)
    oracle = oracle if oracle is not None else study_oracle(client, run)
    floor = logged_floor(client, run.data.tags.get(PARENT_TAG))
    drawn = {}
    for split, rows in tables.items():
        drawn[split] = log_figures(
            client,
            run_id,
            rows,
            split=split,
            reference_rows=oracle.get(split),
            out_dir=out_dir / split if out_dir is not None else None,
            floor=floor.get(split),
        )
    return drawn
