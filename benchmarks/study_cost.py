"""What a finished search study cost against the training it needed: wall / ideal packed time.

Reads one finished study (the latest of its experiment, or ``--parent-run``) from its MLflow
store and its Ray Tune results:

- wall: the study's parent run, from its start to its end (the driver has started Ray, checked
  the data and the tracking store before the parent run starts: that start-up, about 10 s on 2
  cores, is printed apart, as the script's own wall time when ``--run`` ran it);
- ideal packed training time: the sum of the searched trials' training epochs (each epoch's
  ``time/epoch_s`` as the training loop measured it: training, validation spectrum and
  checkpoint, in Tune's ``result.json`` of every trial), divided by the study's concurrency
  (``study.resolved_max_concurrent`` on the parent run); the reference model's epochs are
  shown too, and a second ratio counts them;
- where the rest went: the parent's start to the first searched trial's first epoch, the
  trials' time outside their epochs (Tune's ``time_total_s`` less the epochs: process start,
  data, model), and the last trial's last report to the parent's end (the test evaluation of the
  selected trial and the reference, their figures);
- the floor: every CPU-second the study spends (the trials' and the reference's trainables as
  Tune timed them, the oracle task and the two test reports as they log ``time/oracle_s`` and
  ``time/present_s``) divided by the concurrency; no schedule of that work on that many CPUs
  ends sooner, so ``floor_ratio`` is the best ratio that scheduling alone could reach.

Goal (issue 12): wall / ideal at most 1.3 for the default study.

    .venv/bin/python benchmarks/study_cost.py --run --root /tmp/study_cost   (runs the default
        study there first: studies/qa_moe_search.py, then measures it)
    .venv/bin/python benchmarks/study_cost.py --tracking-uri sqlite:////tmp/x/mlruns.db
        [--experiment qa_moe_search] [--parent-run ID] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
STUDY_TAG = "robustmsa.study"  # robustmsa.tracking.runs.STUDY_TAG
EPOCH_KEY = "time/epoch_s"  # robustmsa.training.loop.TIMING_PREFIX + "epoch_s"
ORACLE_KEY = "time/oracle_s"  # robustmsa.search.study_evaluation.ORACLE_TIME
PRESENT_KEY = "time/present_s"  # robustmsa.search.study_evaluation.PRESENT_TIME
RUN_TAGS = ("robustmsa.selected_run_id", "robustmsa.reference_run_id")


def _results(trial_dir: Path) -> list[dict]:
    """The reports of one Tune trial directory (``result.json``: one JSON object per line)."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trial_reports(storage: Path, experiment_dir: str) -> dict[str, list[dict]]:
    """``{trial dir name: reports}`` of one Tune experiment under ``storage``."""
    root = storage / experiment_dir
    if not root.is_dir():
        raise SystemExit(f"{root}: no Tune experiment there (study.storage_path of the study)")
    return {d.name: _results(d) for d in sorted(root.iterdir()) if d.is_dir()}


def measure(tracking_uri: str, experiment: str, parent_run_id: str | None) -> dict:
    from mlflow.tracking import MlflowClient
    from robustmsa.analysis import find_study

    client = MlflowClient(tracking_uri)
    parent = find_study(client, experiment, parent_run_id, kind="search")
    if parent.info.end_time is None:
        raise SystemExit(f"study run {parent.info.run_id}: not finished")
    p = parent.data.params
    name, pid = parent.data.tags[STUDY_TAG], parent.info.run_id
    storage = Path(p["study.storage_path"])
    concurrency = int(p["study.resolved_max_concurrent"])
    searched = trial_reports(storage, f"{name}-{pid[:8]}")
    try:
        reference = trial_reports(storage, f"reference-{pid[:8]}")
    except SystemExit:
        reference = {}

    def epochs(reports: dict[str, list[dict]]) -> list[float]:
        return [r[EPOCH_KEY] for rs in reports.values() for r in rs]

    def outside(reports: dict[str, list[dict]]) -> float:
        total = sum(rs[-1]["time_total_s"] for rs in reports.values() if rs)
        return total - sum(epochs(reports))

    # The work besides the searched trials' training, in seconds of one CPU each: the reference
    # model's trainable, the oracle task, the selected trial's and the reference's test report
    # with figures. No schedule packs the study shorter than all the work / the concurrency.
    oracle_s = parent.data.metrics.get(ORACLE_KEY, 0.0)
    present_s = sum(
        client.get_run(parent.data.tags[tag]).data.metrics.get(PRESENT_KEY, 0.0)
        for tag in RUN_TAGS
        if tag in parent.data.tags
    )
    reference_s = sum(rs[-1]["time_total_s"] for rs in reference.values() if rs)
    trials_s = sum(rs[-1]["time_total_s"] for rs in searched.values() if rs)
    work_s = trials_s + reference_s + oracle_s + present_s

    start, end = parent.info.start_time / 1000, parent.info.end_time / 1000
    first = min(rs[0]["timestamp"] - rs[0]["time_this_iter_s"] for rs in searched.values() if rs)
    last = max(rs[-1]["timestamp"] for rs in searched.values() if rs)
    trained = epochs(searched)
    ideal = sum(trained) / concurrency
    ideal_with_reference = (sum(trained) + sum(epochs(reference))) / concurrency
    wall = end - start
    return {
        "tracking_uri": tracking_uri,
        "parent_run_id": pid,
        "concurrency": concurrency,
        "trials": len(searched),
        "epochs_trained": len(trained),
        "epoch_s_median": sorted(trained)[len(trained) // 2] if trained else None,
        "trial_epochs_s": round(sum(trained), 1),
        "trial_time_outside_epochs_s": round(outside(searched), 1),
        "reference_epochs_s": round(sum(epochs(reference)), 1),
        "wall_s": round(wall, 1),
        "ideal_packed_s": round(ideal, 1),
        "ratio": round(wall / ideal, 3),
        "ratio_counting_the_reference": round(wall / ideal_with_reference, 3),
        "before_the_search_s": round(first - start, 1),
        "search_s": round(last - first, 1),
        "after_the_search_s": round(end - last, 1),
        "work_reference_s": round(reference_s, 1),
        "work_oracle_s": round(oracle_s, 1),
        "work_test_reports_s": round(present_s, 1),
        "work_total_s": round(work_s, 1),
        "floor_wall_s": round(work_s / concurrency, 1),
        "floor_ratio": round(work_s / concurrency / ideal, 3),
        "goal_ratio_at_most": 1.3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the default study first")
    parser.add_argument("--root", type=Path, default=Path("/tmp/robustmsa-study-cost"))
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="qa_moe_search")
    parser.add_argument("--parent-run", default=None)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "study_cost.json")
    args = parser.parse_args(argv)
    script_wall = None
    if args.run:
        args.root.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        cmd = [sys.executable, str(REPO / "studies" / "qa_moe_search.py"), "--root", str(args.root)]
        subprocess.run(cmd, check=True, cwd=args.root)
        script_wall = time.time() - t0
    uri = args.tracking_uri or f"sqlite:///{(args.root / 'mlruns.db').resolve()}"
    result = measure(uri, args.experiment, args.parent_run)
    if script_wall is not None:
        result["script_wall_s"] = round(script_wall, 1)
        result["script_ratio"] = round(script_wall / result["ideal_packed_s"], 3)
    result["date"] = time.strftime("%Y-%m-%d")
    for key, value in result.items():
        print(f"{key:>30}: {value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
