"""Wall time of a finished search study re-played on 1, 4 and 16 GPU workers (a model on paper).

Reads one finished study from its MLflow store (the parent run and its child runs: run start and
end times, the ``robustmsa.epochs_run`` / ``robustmsa.outcome`` / ``robustmsa.role`` tags, the
timestamps of the per-epoch ``train/loss`` points and of the logged validation spectrum) and
derives what each part of the study cost where it ran:

- per trial: start-up (run start to first epoch, less one epoch), the mean epoch, the epochs it
  ran (ASHA and early stopping as they happened in that run);
- per finishing task (validation spectrum + oracle + figures, and the one test evaluation of a
  completed trial): from the logged validation spectrum to the end of the run, a lower bound;
  the wait of the reference's finishing task (which starts on an idle worker) gives the set-up
  of a fresh finishing process (task start, checkpoint load, validation oracle);
- the driver's fixed parts: before the reference trial, between the reference and the search,
  after the last run.

It then re-plays the study on W workers (each holds one trial or one finishing task) as a
discrete-event schedule with the rules seen in the measured run: the reference trial alone
first; then the searched trials, at most W at a time (``study.max_concurrent`` = W, or
``auto``); a finished trial's process is reused for the next trial at once; a worker that is not
reused takes a waiting finishing task before a new trial. Node start-up: the first worker is
asked for when the study starts, the other W - 1 when the reference ends; each is usable after
the scenario's delay (`SCENARIOS`). `Assumed` holds the costs the store cannot show: a fresh
trial process, a node's first use of the data, the oracle recomputed by each new finishing
process.

Measured vs assumed: every duration read from the store is measured (on CPU unless the study
ran on GPUs); the epochs per trial are those of the measured run (ASHA at other concurrency may
stop trials differently); node delays and `Assumed` are assumptions. A GPU epoch is faster than
a CPU one: ``--epoch-s`` (the searched trials' median epoch; every epoch scaled by the same
factor) or ``--epoch-scale``, and ``--finish-scale`` for the finishing tasks, plug a GPU
measurement in. ``--calibrate W`` replays the measured run at its own concurrency next to its
measured wall time.

    .venv/bin/python benchmarks/scaling_model.py --tracking-uri sqlite:////tmp/study/mlruns.db \
        [--experiment qa_moe_search] [--parent-run ID] [--workers 1 4 16] [--calibrate 2] \
        [--epoch-s S | --epoch-scale F] [--finish-scale F] [--json OUT]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import statistics
import time
from dataclasses import asdict, dataclass

ROLE_TAG = "robustmsa.role"

# Node start-up delay (s) from the autoscaler's request to a worker that can run a trial.
# Assumptions, not measured here (no cloud or Kubernetes access from this machine):
SCENARIOS = {
    # Nodes already up (a fixed-size cluster, or min_workers / minReplicas = W).
    "warm": 0.0,
    # KubeRay: a worker pod on a GPU node already in the Kubernetes cluster. Scheduling and
    # container start take seconds once the image is on the node; pulling the project's image
    # (cluster/Dockerfile: the Ray GPU image plus CUDA torch, several GB) about 1-2 min: 90 s.
    # KubeRay's default upscalingMode is not rate-limited: every pod is asked for at once.
    "kuberay_pod": 90.0,
    # KubeRay when the Kubernetes cluster autoscaler must first add a GPU node: VM provisioning
    # and boot (1-2 min) plus the pull above: 3.5 min, 210 s.
    "kuberay_new_node": 210.0,
    # Ray cluster launcher on AWS / GCP (cluster/aws.yaml, gcp.yaml): a GPU VM from zero,
    # provisioning and boot 1-2 min, pulling rayproject/ray:2.60.0-py311-gpu 1-2 min, then
    # cluster/install_node.sh gpu (pip install of CUDA torch and the pinned dependencies,
    # 1-3 min) and `ray start`: 3-7 min, 300 s. The launcher limits pending nodes to
    # max(5, upscaling_speed x running) per node type, but not the nodes it launches for
    # placement groups (Ray 2.60 autoscaler/_private/resource_demand_scheduler.py), and Tune
    # trials are placement groups: the search's nodes are launched at once.
    "vm_launcher": 300.0,
}


@dataclass
class Trial:
    name: str
    role: str  # "reference" or "search"
    outcome: str
    start: float
    end: float
    epochs: int
    epoch_s: float  # mean gap between consecutive epochs (last - first) / (epochs - 1)
    startup_s: float  # run start to first epoch, less one epoch
    last_epoch: float  # timestamp of the last epoch
    valid_logged: float | None  # timestamp of the logged validation spectrum (finishing task)
    finish_s: float  # valid_logged to run end (lower bound of the finishing task)
    queue_s: float | None  # last epoch to the logged validation spectrum


def _ms(value: int | None) -> float | None:
    return None if value is None else value / 1000.0


def _first_timestamp(client, run, prefix: str) -> float | None:
    keys = sorted(k for k in run.data.metrics if k.startswith(prefix))
    if not keys:
        return None
    history = client.get_metric_history(run.info.run_id, keys[0])
    return min(m.timestamp for m in history) / 1000.0


def read_study(tracking_uri: str, experiment: str, parent_run: str | None) -> dict:
    """The study's parent run times and its child runs as `Trial`s (in start order)."""
    from mlflow.tracking import MlflowClient
    from robustmsa.analysis import find_study

    client = MlflowClient(tracking_uri)
    # The latest study when no parent is named (a study still running has no end to replay).
    parent = find_study(client, experiment, parent_run, kind="search")
    if parent.info.end_time is None:
        raise SystemExit(f"study run {parent.info.run_id}: not finished")
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        max_results=10000,
    )
    trials = []
    for run in children:
        tags = run.data.tags
        history = sorted(
            client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step
        )
        stamps = [m.timestamp / 1000.0 for m in history]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        start, end = _ms(run.info.start_time), _ms(run.info.end_time)
        epoch_s = statistics.fmean(gaps) if gaps else (stamps[0] - start if stamps else 0.0)
        valid_logged = _first_timestamp(client, run, "spectrum/")
        last_epoch = stamps[-1] if stamps else start
        trials.append(
            Trial(
                name=run.info.run_name,
                role=tags.get(ROLE_TAG, "search"),
                outcome=tags.get("robustmsa.outcome", "?"),
                start=start,
                end=end,
                epochs=int(tags.get("robustmsa.epochs_run", len(stamps))),
                epoch_s=epoch_s,
                startup_s=max((stamps[0] - start) - epoch_s, 0.0) if stamps else 0.0,
                last_epoch=last_epoch,
                valid_logged=valid_logged,
                finish_s=end - (valid_logged if valid_logged else last_epoch),
                queue_s=(valid_logged - last_epoch) if valid_logged else None,
            )
        )
    trials.sort(key=lambda t: t.start)
    return {
        "parent_run": parent.info.run_id,
        "start": _ms(parent.info.start_time),
        "end": _ms(parent.info.end_time),
        "trials": trials,
    }


@dataclass
class Costs:
    """The per-part costs the schedule is built from (seconds)."""

    pre_s: float  # study start to the reference trial's run start (Ray, Tune, actor start)
    reference_s: float  # the reference trial: run start to its last epoch
    reference_finish_s: float
    search_gap_s: float  # the reference's last epoch to the first searched trial's run start
    finish_start_s: float  # a fresh finishing process: trial's last epoch to its first log
    reuse_gap_s: float  # a reused trial process: previous trial's last epoch to next run start
    # (name, start-up, epochs, epoch_s, finish_s, completed): start-up is run start to first
    # epoch, less one epoch
    trials: list[tuple[str, float, int, float, float, bool]]
    post_s: float  # the last child run's end to the study's end


def searched_epoch_s(study: dict) -> float:
    """The median epoch of the searched trials, weighted by the epochs each ran."""
    return statistics.median(
        [t.epoch_s for t in study["trials"] if t.role == "search" for _ in range(t.epochs)]
    )


def derive_costs(study: dict, epoch_scale: float = 1.0, finish_scale: float = 1.0) -> Costs:
    trials = study["trials"]
    refs = [t for t in trials if t.role == "reference"]
    search = [t for t in trials if t.role == "search"]
    if not search:
        raise SystemExit("the study has no searched trial")
    first = search[0]
    # A reused trial process: the next trial's run starts right after a trial's last epoch
    # (Tune stops it and starts the next on the same actor); take the gaps that are short
    # enough to be that (below 10 s).
    gaps = []
    for t in search[1:]:
        before = [s.last_epoch for s in search if s.last_epoch <= t.start]
        if before:
            gaps.append(t.start - max(before))
    reuse = [g for g in gaps if g < 10.0]
    if refs:
        ref = refs[0]
        reference_s = ref.startup_s + ref.epochs * ref.epoch_s * epoch_scale
        reference_finish_s = ref.finish_s * finish_scale
        pre_s = ref.start - study["start"]
        search_gap_s = first.start - ref.last_epoch
    else:
        reference_s = reference_finish_s = 0.0
        pre_s, search_gap_s = first.start - study["start"], 0.0
        ref = None
    return Costs(
        pre_s=pre_s,
        reference_s=reference_s,
        reference_finish_s=reference_finish_s,
        search_gap_s=search_gap_s,
        # The reference's finishing starts on an idle worker in a new process (nothing else
        # runs then): its wait is the set-up of a finishing process (Tune's stop, the task's
        # worker process, the checkpoint load, the validation oracle).
        finish_start_s=ref.queue_s if ref is not None and ref.queue_s is not None else 0.0,
        reuse_gap_s=statistics.median(reuse) if reuse else 0.0,
        trials=[
            (
                t.name,
                t.startup_s,
                t.epochs,
                t.epoch_s * epoch_scale,
                t.finish_s * finish_scale,
                t.outcome == "completed",
            )
            for t in search
        ],
        post_s=max(study["end"] - max(t.end for t in trials), 0.0),
    )


@dataclass
class Assumed:
    """Costs the store cannot show, assumed per fresh worker (seconds; module docstring)."""

    # A fresh trial process imports torch and MLflow before its run starts (invisible in the
    # store): 6.97 s per trial without actor reuse vs 2.79 s with it (benchmarks/README.md,
    # Per-trial overhead), about 4.2 s.
    actor_start_s: float = 4.2
    # A fresh node's first use of the data: the synthetic MOSI preset generated on its disk
    # (7.3 s here) and its frame cache built (1.6 s): 8.9 s (measured on this machine; CUDA
    # context creation not included).
    node_first_use_s: float = 8.9
    # The Bayes oracle's test table, computed once per process (results/oracle_cost.json as
    # recorded on 2026-12-02: 26.7 s for the 218 test points); the measured run computed it
    # once, in the reference's finishing task, so each other worker's first completed-trial
    # finishing pays it again.
    oracle_s: float = 26.7


def simulate(costs: Costs, workers: int, node_delay_s: float, assumed: Assumed | None = None):
    """The study's wall time on ``workers`` workers (module docstring) and its schedule.

    Scheduling as observed in the measured run: a trial process is reused for the next trial
    at once; a worker that is not reused takes a waiting finishing task first (a task's lease is
    granted before Tune's next placement group), else starts a new trial.
    Returns ``(wall_s, busy_s, log)``; ``busy_s`` sums the workers' busy time, ``log`` lists
    ``(what, worker, start, end)``."""
    c, a = costs, assumed or Assumed()
    used = [False] * workers  # whether the worker's node has run anything yet
    has_oracle = [False] * workers  # whether the worker's finishing process holds the oracle
    finisher = [False] * workers  # whether the worker has a finishing process already
    log: list[tuple[str, int, float, float]] = []
    events: list = []  # (time, seq, kind, worker, payload)
    seq = 0

    def push(at: float, kind: str, k: int = -1, payload=None) -> None:
        nonlocal seq
        heapq.heappush(events, (at, seq, kind, k, payload))
        seq += 1

    def occupy(k: int, at: float, what: str, duration: float) -> float:
        extra = 0.0 if used[k] else a.node_first_use_s
        used[k] = True
        end = at + extra + duration
        log.append((what, k, round(at, 1), round(end, 1)))
        return end

    # The reference trial: alone, on the first worker, asked for when the study starts.
    # The driver's set-up overlaps the first node's start; the trial's actor starts on the node.
    ref_start = max(c.pre_s, node_delay_s + a.actor_start_s)
    ref_end = occupy(0, ref_start, "reference", c.reference_s) if c.reference_s else ref_start
    # Tune's set-up of the search; the first trial's actor start is counted with the trial.
    search_t = ref_end + max(c.search_gap_s - a.actor_start_s, 0.0)
    finishing: list[tuple[float, int, str, float, str]] = []  # (submitted, seq, name, s, kind)
    if c.reference_s:
        finishing.append((ref_end, -1, "reference", c.reference_finish_s, "reference"))
    pending = list(c.trials)
    # The other workers are asked for when the reference ends (the search's demand).
    push(ref_end, "free", 0)
    for k in range(1, workers):
        push(ref_end + node_delay_s if node_delay_s else 0.0, "free", k)
    push(search_t, "search")
    idle: list[int] = []
    started = False

    def start_trial(k: int, at: float, fresh: bool) -> None:
        name, startup_s, epochs, epoch_s, finish_s, completed = pending.pop(0)
        setup = startup_s + (a.actor_start_s if fresh else c.reuse_gap_s)
        end = occupy(k, at, f"trial {name}", setup + epochs * epoch_s)
        push(end, "trial_end", k, (name, finish_s, completed))

    def dispatch(at: float) -> None:
        while idle:
            ready = sorted(f for f in finishing if f[0] <= at)
            if ready:
                finishing.remove(ready[0])
                _, _, name, duration, kind = ready[0]
                k = idle.pop(0)
                if not finisher[k]:
                    finisher[k] = True
                    duration += c.finish_start_s
                if kind == "reference":
                    has_oracle[k] = True  # its measured cost includes the oracle
                elif kind == "completed" and not has_oracle[k]:
                    has_oracle[k] = True
                    duration += a.oracle_s
                push(occupy(k, at, f"finish {name}", duration), "free", k)
            elif started and pending:
                start_trial(idle.pop(0), at, fresh=True)
            else:
                return

    end_all = ref_end
    while events:
        at, _, kind, k, payload = heapq.heappop(events)
        end_all = max(end_all, at)
        if kind == "search":
            started = True
        elif kind == "trial_end":
            name, finish_s, completed = payload
            outcome = "completed" if completed else "pruned"
            finishing.append((at, seq, name, finish_s, outcome))
            if pending:  # Tune reuses the trial's actor for the next trial
                start_trial(k, at, fresh=False)
            else:
                idle.append(k)
        else:
            idle.append(k)
        dispatch(at)
    busy = sum(end - start for _, _, start, end in log)
    return end_all + c.post_s, busy, log


def table(costs: Costs, workers: list[int], assumed: Assumed) -> list[dict]:
    rows = []
    for name, delay in SCENARIOS.items():
        for w in workers:
            wall, busy, _ = simulate(costs, w, delay, assumed)
            rows.append(
                {
                    "scenario": name,
                    "node_delay_s": delay,
                    "workers": w,
                    "wall_s": round(wall, 1),
                    "worker_utilisation": round(busy / (w * wall), 3),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", default="qa_moe_search")
    parser.add_argument("--parent-run", default=None, help="default: the latest finished study")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--calibrate", type=int, default=None, help="the measured concurrency")
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="x every epoch")
    parser.add_argument(
        "--epoch-s", type=float, default=None, help="median searched epoch (sets --epoch-scale)"
    )
    parser.add_argument("--finish-scale", type=float, default=1.0, help="x every finishing task")
    defaults = Assumed()
    parser.add_argument("--actor-start-s", type=float, default=defaults.actor_start_s)
    parser.add_argument("--node-first-use-s", type=float, default=defaults.node_first_use_s)
    parser.add_argument("--oracle-s", type=float, default=defaults.oracle_s)
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()

    study = read_study(args.tracking_uri, args.experiment, args.parent_run)
    measured_epoch = searched_epoch_s(study)
    scale = args.epoch_s / measured_epoch if args.epoch_s else args.epoch_scale
    costs = derive_costs(study, scale, args.finish_scale)
    assumed = Assumed(args.actor_start_s, args.node_first_use_s, args.oracle_s)
    measured_wall = study["end"] - study["start"]
    print(f"study run {study['parent_run']}: measured wall {measured_wall:.1f} s")
    print("\nper run (measured):")
    print(
        "  run                   role       outcome    epochs  epoch_s  startup_s  queue_s"
        "  finish_s"
    )
    for t in study["trials"]:
        queue = f"{t.queue_s:8.1f}" if t.queue_s is not None else "       -"
        print(
            f"  {t.name:<21} {t.role:<10} {t.outcome:<10} {t.epochs:>6} {t.epoch_s:>8.2f} "
            f"{t.startup_s:>10.2f} {queue} {t.finish_s:>9.1f}"
        )
    print(f"\nmedian searched epoch {measured_epoch:.2f} s measured; epoch scale {scale:.3f}")
    print("costs of the model (s):")
    for k, v in asdict(costs).items():
        if k != "trials":
            print(f"  {k:<20} {v:8.2f}")
    epochs = sum(t[2] for t in costs.trials)
    print(f"  searched epochs      {epochs:8d}  (over {len(costs.trials)} trials)")
    print("assumed (s): " + ", ".join(f"{k} {v}" for k, v in asdict(assumed).items()))
    calibration = None
    if args.calibrate:
        # The measured run itself: one machine (no node start-up, data already there), one
        # finishing process (the oracle computed once); its Ray set-up and first actor are in
        # pre_s and search_gap_s.
        same = Assumed(actor_start_s=args.actor_start_s, node_first_use_s=0.0, oracle_s=0.0)
        wall, _, _ = simulate(derive_costs(study), args.calibrate, 0.0, same)
        calibration = {"workers": args.calibrate, "model_s": round(wall, 1)}
        calibration["measured_s"] = round(measured_wall, 1)
        print(
            f"\ncalibration: the measured run re-played on {args.calibrate} workers: model "
            f"{wall:.1f} s, measured {measured_wall:.1f} s"
        )
    rows = table(costs, args.workers, assumed)
    print("\nmodel wall time (s) by scenario (node start-up delay) and workers:")
    print("  scenario       delay_s " + "".join(f"{w:>10}" for w in args.workers))
    for name, delay in SCENARIOS.items():
        walls = [r["wall_s"] for r in rows if r["scenario"] == name]
        print(f"  {name:<14} {delay:>7.0f} " + "".join(f"{w:>10.1f}" for w in walls))
    if args.json:
        out = {
            "tracking_uri": args.tracking_uri,
            "parent_run": study["parent_run"],
            "measured_wall_s": round(measured_wall, 1),
            "measured_median_searched_epoch_s": round(measured_epoch, 3),
            "runs": [asdict(t) for t in study["trials"]],
            "epoch_scale": round(scale, 4),
            "finish_scale": args.finish_scale,
            "costs": asdict(costs),
            "assumed": asdict(assumed),
            "scenarios_node_delay_s": SCENARIOS,
            "calibration": calibration,
            "table": rows,
            "date": time.strftime("%Y-%m-%d"),
        }
        with open(args.json, "w") as fh:
            fh.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
