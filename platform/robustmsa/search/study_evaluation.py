"""What a search study evaluates besides its trials' training (the evaluation policy).

Every trial's run holds what it logged while training (per-epoch metrics, the best epoch's
checkpoint); a completed trial's run also gets that epoch's validation spectrum, already
computed, at no extra cost (`robustmsa.search.trial.finish_trial_run`). The costly parts are
done once per study, here, as Ray tasks:

- `start_oracle`: the Bayes oracle (synthetic data only) on the validation points and on the
  test report's points, logged once on the parent run (``oracle/spectrum/...``,
  ``test/oracle/spectrum/...``); submitted when the study starts, so it runs beside the
  reference model's training;
- `present_runs`: after the search, for the trial the study selected on validation and for the
  reference model, the one test evaluation (``evaluation.test_policy: selected``; with
  ``completed`` every completed trial was evaluated in its own finishing task) and the figures
  of both splits with the oracle as their ceiling. One task per run, side by side.

Other runs' figures are drawn on demand: ``robustmsa report --run-id RUN``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from robustmsa.evaluation.logged import CHECKPOINT_ARTIFACTS, TEST_TAG, evaluate_test_once
from robustmsa.evaluation.report import get_run, report_run
from robustmsa.search.trial import error_line, one_torch_thread
from robustmsa.tracking.spool import SpoolingClient
from robustmsa.training.loop import TIMING_PREFIX

# What each task took, logged where its output goes (benchmarks/study_cost.py adds them up).
ORACLE_TIME = TIMING_PREFIX + "oracle_s"  # on the parent run
PRESENT_TIME = TIMING_PREFIX + "present_s"  # on the selected trial's and the reference's run


@ray.remote
def _oracle_task(
    tracking_uri: str,
    parent_run_id: str,
    data: dict[str, Any],
    spectrum: dict[str, Any],
    log: bool = True,
) -> dict[str, list[dict]] | None:
    """The oracle's rows ``{"valid": ..., "test": ...}`` on the study's points, logged to the
    parent run (unless ``log`` is off: a resumed study's parent has them); None for a dataset
    without a generator (no oracle exists)."""
    from robustmsa.data.parquet import open_dataset
    from robustmsa.data.source import dataset_dir
    from robustmsa.evaluation.ceiling import oracle_rows
    from robustmsa.evaluation.spectrum import SpectrumEvaluator
    from robustmsa.spectrum import build_points
    from robustmsa.tracking.spectrum import ORACLE_SOURCE, log_spectrum

    root = dataset_dir(
        data["source"],
        path=data["path"],
        preset=data["preset"],
        seed=data["seed"],
        cache_dir=data["cache_dir"],
    )
    splits = open_dataset(root, frame_cache=Path(data["cache_dir"]) / "frames")
    client = SpoolingClient(tracking_uri)
    found = {}
    started = time.perf_counter()
    with one_torch_thread():
        points = {"valid": spectrum["protocols"], "test": spectrum["report_protocols"]}
        for split, names in points.items():
            evaluator = SpectrumEvaluator(
                splits[split], build_points(names), seed=spectrum["eval_seed"]
            )
            rows = oracle_rows(evaluator)
            if rows is None:
                return None
            if log:
                log_spectrum(
                    client, parent_run_id, rows, split=split, source=ORACLE_SOURCE, figures=False
                )
            found[split] = rows
    if log:
        client.log_metric(parent_run_id, ORACLE_TIME, time.perf_counter() - started)
    return found


def start_oracle(
    tracking_uri: str, parent_run_id: str, base: dict[str, Any], resources: dict[str, float]
) -> ray.ObjectRef:
    """Submit the oracle task (module docstring) with ``resources`` (a finishing task's:
    ``{"cpu": c}``); returns its ObjectRef, whose value the study's later tasks take. A
    resumed study whose parent already holds the oracle's rows computes them without logging
    them twice."""
    logged = ORACLE_TIME in SpoolingClient(tracking_uri).get_run(parent_run_id).data.metrics
    return _oracle_task.options(num_cpus=resources.get("cpu", 1)).remote(
        tracking_uri, parent_run_id, base["data"], base["spectrum"], log=not logged
    )


@ray.remote
def _present_task(
    tracking_uri: str, run_id: str, oracle: dict[str, list[dict]] | None, device: str
) -> None:
    """The selected trial's or the reference's test evaluation (unless done) and figures."""
    client = SpoolingClient(tracking_uri)
    started = time.perf_counter()
    with one_torch_thread():
        if TEST_TAG not in get_run(client, run_id).data.tags:
            with tempfile.TemporaryDirectory(prefix="robustmsa-present-") as tmp:
                local = client.download_artifacts(run_id, CHECKPOINT_ARTIFACTS, tmp)
                evaluate_test_once(client, run_id, local, device=device)
        report_run(client, run_id, oracle=oracle or {})
    client.log_metric(run_id, PRESENT_TIME, time.perf_counter() - started)


def present_runs(
    tracking_uri: str,
    run_ids: list[str],
    oracle: ray.ObjectRef | None,
    resources: dict[str, float],
) -> list[str]:
    """Test evaluation and figures for each of ``run_ids`` (module docstring), side by side
    with ``resources`` each (a finishing task's: ``{"cpu": c}``, ``"gpu"`` to evaluate on a
    GPU); waits for them and returns the lines of those that failed (empty when none did)."""
    options = {"num_cpus": resources.get("cpu", 1), "num_gpus": resources.get("gpu", 0)}
    device = "cuda" if resources.get("gpu", 0) else "cpu"
    tasks = [
        (run_id, _present_task.options(**options).remote(tracking_uri, run_id, oracle, device))
        for run_id in run_ids
    ]
    failed = []
    for run_id, task in tasks:
        try:
            ray.get(task)
        except Exception as exc:  # the task's error, or its worker died
            failed.append(f"run {run_id}: {error_line(exc)}")
    return failed
