"""Steady-state epoch time of the training loop through a one-worker ``TorchTrainer`` vs in-process.

Both arms call `robustmsa.training.trainer.fit` on the same config (the QA-MoE search study,
`studies/configs/qa_moe_search.yaml`, at its default model size, on the MOSI-shaped synthetic
preset unless ``--preset`` says otherwise), once with ``training.backend=in_process`` (the bare
loop, `run_training`, in this process) and once with ``training.backend=torch_trainer`` (one Ray
Train worker). A picklable sink, called once per epoch on rank 0 (in the Train worker for the
``TorchTrainer`` arm), appends ``time.time()`` and the calling process's CPU time to a file.
The epoch time is the gap between two consecutive sink calls, so the first epoch (start-up,
data open, first allocations) is excluded; each gap holds one epoch's training, validation
spectrum, checkpoint write and the previous epoch's report. The fixed cost of a fit is its wall
time minus ``epochs x`` its median epoch time.

Threads: Ray starts a 1-CPU worker with ``OMP_NUM_THREADS=1``, so torch runs one intra-op
thread there; the in-process arm calls ``torch.set_num_threads(1)`` to match (the sink records
``torch.get_num_threads()`` in both arms to check it).

The arms alternate, AB then BA, over ``--rounds`` rounds in one process and one local Ray, so
that load from other work on the machine falls on both; the ratio is taken per round (median
epoch of the ``TorchTrainer`` fit over the median epoch of the in-process fit of that round) and
the median and range of those ratios are reported, with the load averages. The one per-epoch
step that only the ``TorchTrainer`` path takes, ``ray.train.report`` (checkpoint persisted to
the run's storage, metrics to the controller), is also timed directly inside the worker (the
sink wraps it on its first call), which a loaded machine disturbs far less than epoch ratios.

    .venv/bin/python benchmarks/torch_trainer_epoch.py [--rounds 12] [--epochs 4] [--preset mosi] \
        [--set training.use_gpu=true] [--out FILE]

Results are written to benchmarks/results/torch_trainer_epoch.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUDY_YAML = HERE.parent / "studies" / "configs" / "qa_moe_search.yaml"
ARMS = ("in_process", "torch_trainer")


class EpochClock:
    """A sink ``(metrics, step)`` that appends ``epoch wall cpu pid threads`` to ``path``.

    Picklable (a path only), so Ray can ship it to the Train worker with the loop config."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, metrics: dict, step: int) -> None:
        import torch

        if step == 1:
            self._time_train_report()
        line = f"{step} {time.time():.6f} {time.process_time():.6f} {os.getpid()} "
        line += f"{torch.get_num_threads()}\n"
        with open(self.path, "a") as fh:
            fh.write(line)

    def _time_train_report(self) -> None:
        """In a Train worker, wrap ``ray.train.report`` (looked up by the loop's reporter at
        each call) so that each call's wall and CPU time go to ``<path>.report``: the per-epoch
        cost that only the ``TorchTrainer`` path has (checkpoint persisted to the run's
        storage, metrics to the controller), measured directly and so less exposed to load."""
        import sys

        train = sys.modules.get("ray.train")
        if train is None or getattr(train.report, "_timed", False):
            return
        report, out = train.report, self.path + ".report"

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return report(*args, **kwargs)
            finally:
                with open(out, "a") as fh:
                    fh.write(f"{time.perf_counter() - wall:.6f} {time.process_time() - cpu:.6f}\n")

        timed._timed = True
        train.report = timed


def _config(arm: str, preset: str, epochs: int, cache_dir: Path, extra: list[str]):
    from robustmsa.config import load

    return load(
        STUDY_YAML,
        [
            f"data.preset={preset}",
            f"data.cache_dir={cache_dir}",
            f"training.epochs={epochs}",
            f"training.patience={epochs + 1}",  # no early stop: every fit runs every epoch
            f"training.backend={arm}",
            "training.num_workers=1",
            *extra,
        ],
    )


def one_fit(
    arm: str, preset: str, epochs: int, root: Path, tag: str, extra: list[str] = ()
) -> dict:
    from robustmsa.training.trainer import fit

    clock = root / f"clock-{tag}.txt"
    load_before = os.getloadavg()
    started = time.time()
    outcome = fit(
        _config(arm, preset, epochs, root / "data", list(extra)),
        sinks=[EpochClock(str(clock))],
        storage_path=root / "ray_results",
    )
    wall = time.time() - started
    load_after = os.getloadavg()
    rows = [line.split() for line in clock.read_text().splitlines()]
    assert outcome.epochs_run == epochs and len(rows) == epochs, (outcome.epochs_run, len(rows))
    times = [float(r[1]) for r in rows]
    cpus = [float(r[2]) for r in rows]
    epoch_s = [b - a for a, b in itertools.pairwise(times)]
    epoch_cpu_s = [b - a for a, b in itertools.pairwise(cpus)]
    median = statistics.median(epoch_s)
    timed = Path(str(clock) + ".report")
    reports = [line.split() for line in timed.read_text().splitlines()] if timed.exists() else []
    return {
        "arm": arm,
        "wall_s": round(wall, 3),
        "epoch_s": [round(x, 3) for x in epoch_s],
        "epoch_cpu_s": [round(x, 3) for x in epoch_cpu_s],
        "median_epoch_s": round(median, 3),
        "median_epoch_cpu_s": round(statistics.median(epoch_cpu_s), 3),
        "start_to_first_report_s": round(times[0] - started, 3),
        "last_report_to_return_s": round(started + wall - times[-1], 3),
        "fixed_s": round(wall - epochs * median, 3),
        "train_report_s": [round(float(r[0]), 4) for r in reports],
        "train_report_cpu_s": [round(float(r[1]), 4) for r in reports],
        "worker_pid_is_driver": int(rows[0][3]) == os.getpid(),
        "torch_threads": sorted({int(r[4]) for r in rows}),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }


def _spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fit (>= 3)")
    parser.add_argument("--preset", default="mosi", help="synthetic preset (mosi, tiny, ...)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="more config overrides, e.g. training.use_gpu=true for a GPU measurement",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "torch_trainer_epoch.json")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs must be >= 3 (the first epoch is excluded)")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import torch

    # The in-process arm runs here: one intra-op thread, as Ray gives its 1-CPU workers.
    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    extra = args.overrides
    load_start = os.getloadavg()
    started = time.time()
    fits: list[dict] = []
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="torch-trainer-epoch-") as tmp:
        root = Path(tmp)
        # Warm-up, not measured: generates the dataset and its frame cache, first imports.
        one_fit("in_process", args.preset, 3, root, "warmup", extra)
        for r in range(args.rounds):
            order = ARMS if r % 2 == 0 else ARMS[::-1]
            by_arm = {}
            for arm in order:
                result = one_fit(arm, args.preset, args.epochs, root, f"{r}-{arm}", extra)
                result["round"] = r
                fits.append(result)
                by_arm[arm] = result
                print(json.dumps(result), flush=True)
            ip, tt = by_arm["in_process"], by_arm["torch_trainer"]
            rounds.append(
                {
                    "round": r,
                    "order": list(order),
                    "ratio_median_epoch": round(tt["median_epoch_s"] / ip["median_epoch_s"], 4),
                    "ratio_median_epoch_cpu": round(
                        tt["median_epoch_cpu_s"] / ip["median_epoch_cpu_s"], 4
                    ),
                }
            )
    ray.shutdown()
    arm_fits = {arm: [f for f in fits if f["arm"] == arm] for arm in ARMS}
    all_epochs = {arm: [e for f in arm_fits[arm] for e in f["epoch_s"]] for arm in ARMS}
    pooled = statistics.median(all_epochs["torch_trainer"]) / statistics.median(
        all_epochs["in_process"]
    )
    reports = [x for f in arm_fits["torch_trainer"] for x in f["train_report_s"]]
    reports_cpu = [x for f in arm_fits["torch_trainer"] for x in f["train_report_cpu_s"]]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    result = {
        "what": "steady-state epoch time, one-worker TorchTrainer over in-process run_training",
        "config": f"{STUDY_YAML.relative_to(HERE.parent)} (model as in the study)",
        "preset": args.preset,
        "overrides": extra,
        "epochs_per_fit": args.epochs,
        "rounds": args.rounds,
        "torch_threads": "1 in both arms (Ray: OMP_NUM_THREADS=1; here: torch.set_num_threads)",
        "ratio_median_epoch_per_round": _spread([r["ratio_median_epoch"] for r in rounds]),
        "ratio_median_epoch_cpu_per_round": _spread([r["ratio_median_epoch_cpu"] for r in rounds]),
        "ratio_pooled_median_epoch": round(pooled, 4),
        "goal_ratio_at_most": 1.05,
        "epoch_s": {arm: _spread(all_epochs[arm]) for arm in ARMS},
        # The TorchTrainer path's own per-epoch step, timed inside the worker (EpochClock).
        "train_report_s": _spread(reports) if reports else None,
        "train_report_cpu_s": _spread(reports_cpu) if reports_cpu else None,
        "train_report_share_of_in_process_epoch": (
            round(statistics.median(reports) / statistics.median(all_epochs["in_process"]), 4)
            if reports
            else None
        ),
        "fixed_s_per_fit": {arm: _spread([f["fixed_s"] for f in arm_fits[arm]]) for arm in ARMS},
        "start_to_first_report_s": {
            arm: _spread([f["start_to_first_report_s"] for f in arm_fits[arm]]) for arm in ARMS
        },
        "last_report_to_return_s": {
            arm: _spread([f["last_report_to_return_s"] for f in arm_fits[arm]]) for arm in ARMS
        },
        "per_round": rounds,
        "fits": fits,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.time() - started, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("fits",)}, indent=2))


if __name__ == "__main__":
    main()
