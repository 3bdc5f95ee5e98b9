"""Steady-state epoch time of the in-process training loop, per model, device and precision.

The scaling model (`scaling_model.py --epoch-s`) and the cluster configs need the epoch time of
a trial on a GPU; this measures it rather than assuming it. Every registered model is trained
by `robustmsa.training.trainer.fit` (``training.backend=in_process``: `run_training` in this
process, as a one-worker trial runs it) on the comparison study's config
(`studies/configs/model_comparison.yaml`: the MOSI-shaped synthetic preset, batch 32, the
continuous spectrum, the four validation protocols) with ``model.name`` set, for each arm:

- ``cpu``: ``training.use_gpu=false``, float32, ``--cpu-threads`` torch threads (default 1,
  what Ray gives a 1-CPU trial);
- ``cuda-fp32`` and ``cuda-bf16``: ``training.use_gpu=true`` with ``training.precision``
  ``fp32`` / ``bf16`` (the forward under ``torch.autocast("cuda", bfloat16)``).

An epoch is the gap between two consecutive per-epoch sink calls (`torch_trainer_epoch.EpochClock`):
one epoch's training steps, its validation spectrum (every protocol point), the checkpoint write
and the previous epoch's report; the first epoch (data open, first allocations, CUDA context and
kernels) is excluded. ProMMA trains in two stages; its epochs are counted across both. Reported
per model and arm: the median epoch (s) and each GPU arm's speed-up over the CPU arm when both
ran in this one process (same machine, same moment).

    .venv/bin/python benchmarks/epoch_time.py [--arms cpu cuda-fp32 cuda-bf16] [--epochs 4] \
        [--models qa_moe derl ...] [--out FILE]

Results go to benchmarks/results/epoch_time.json unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from torch_trainer_epoch import EpochClock

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "studies" / "configs" / "model_comparison.yaml"
ARMS = {
    "cpu": ["training.use_gpu=false", "training.precision=fp32"],
    "cuda-fp32": ["training.use_gpu=true", "training.precision=fp32"],
    "cuda-bf16": ["training.use_gpu=true", "training.precision=bf16"],
}


def one_fit(model: str, arm: str, epochs: int, root: Path) -> dict:
    """Train ``model`` for ``epochs`` epochs on ``arm``; its per-epoch times."""
    from robustmsa.config import load
    from robustmsa.training.trainer import fit

    config = load(
        CONFIG,
        [
            f"model.name={model}",
            f"data.cache_dir={root / 'data'}",
            f"training.epochs={epochs}",
            f"training.patience={epochs + 1}",  # no early stop: every fit runs every epoch
            "training.backend=in_process",
            "training.num_workers=1",
            *ARMS[arm],
        ],
    )
    clock = root / f"clock-{model}-{arm}.txt"
    started = time.perf_counter()
    outcome = fit(config, sinks=[EpochClock(str(clock))])
    wall = time.perf_counter() - started
    rows = [line.split() for line in clock.read_text().splitlines()]
    clock.unlink()
    times = [float(r[1]) for r in rows]
    epoch_s = [b - a for a, b in itertools.pairwise(times)]
    # This process's CPU time per epoch: what a loaded machine's other work does not inflate.
    epoch_cpu_s = [float(b[2]) - float(a[2]) for a, b in itertools.pairwise(rows)]
    return {
        "model": model,
        "arm": arm,
        "epochs_run": outcome.epochs_run,
        "wall_s": round(wall, 3),
        "epoch_s": [round(x, 4) for x in epoch_s],
        "median_epoch_s": round(statistics.median(epoch_s), 4),
        "median_epoch_cpu_s": round(statistics.median(epoch_cpu_s), 4),
        "best_score": round(float(outcome.best_score), 6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fit (>= 3)")
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "epoch_time.json")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs must be >= 3 (the first epoch is excluded)")
    import torch
    from robustmsa.models import MODELS

    if any(a.startswith("cuda") for a in args.arms) and not torch.cuda.is_available():
        parser.error("--arms names a cuda arm but CUDA is not available")
    torch.set_num_threads(args.cpu_threads)
    models = args.models or list(MODELS)
    fits = []
    with tempfile.TemporaryDirectory(prefix="epoch-time-") as tmp:
        root = Path(tmp)
        # Warm-up, not measured: generates the dataset and its frame cache, first imports.
        one_fit(models[0], args.arms[0], 3, root)
        for model in models:
            for arm in args.arms:
                result = one_fit(model, arm, args.epochs, root)
                fits.append(result)
                print(json.dumps(result), flush=True)
    table = {}
    for model in models:
        by_arm = {f["arm"]: f["median_epoch_s"] for f in fits if f["model"] == model}
        row = {"median_epoch_s": by_arm}
        if "cpu" in by_arm:
            row["speed_up_over_cpu"] = {
                a: round(by_arm["cpu"] / s, 2) for a, s in by_arm.items() if a != "cpu"
            }
        table[model] = row
    result = {
        "what": "steady-state epoch of the in-process loop (train + validation spectrum + "
        "checkpoint), first epoch excluded",
        "config": f"{CONFIG.relative_to(HERE.parent)} with model.name set",
        "epochs_per_fit": args.epochs,
        "cpu_threads": args.cpu_threads,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "table": table,
        "fits": fits,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'model':<14}" + "".join(f"{a:>12}" for a in args.arms) + "   (median epoch, s)")
    for model, row in table.items():
        print(f"{model:<14}" + "".join(f"{row['median_epoch_s'][a]:>12.3f}" for a in args.arms))


if __name__ == "__main__":
    main()
