"""Cost of a full-spectrum evaluation relative to (number of points x one clean pass).

On the MOSI-shaped synthetic test split, with a registered model at its default config:

- ``clean_pass_s``: `evaluate_spectrum` with the ``clean`` protocol alone (read, forward,
  metrics), best of ``--repeats``;
- ``full_s``: `evaluate_spectrum` with ``clean, missing, noise, joint, patterns, random``
  (every scope), same batch size, best of ``--repeats``;
- ``ratio = full_s / (points x clean_pass_s)``; the goal is at most 1.1: a sweep should cost
  one read and one draw of each batch, then per point only the corruption and the forward.

Also reported, from a cached `SpectrumEvaluator` (public API): the one-off preparation (read,
draws, per-sample random rates) and the sweep itself without it.

    .venv/bin/python benchmarks/spectrum_cost.py [--model late_fusion] [--repeats 2]

Results go to benchmarks/results/spectrum_cost[_<model>].json (late_fusion: no suffix).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PROTOCOLS = ["clean", "missing", "noise", "joint", "patterns", "random"]


def best_of(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="late_fusion")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    from robustmsa.data.parquet import open_dataset
    from robustmsa.data.synthetic import generate
    from robustmsa.evaluation.spectrum import SpectrumEvaluator, evaluate_spectrum
    from robustmsa.models import MODELS
    from robustmsa.spectrum import build_points

    with tempfile.TemporaryDirectory() as tmp:
        data = generate("mosi", Path(tmp) / "mosi", seed=0)
        splits = open_dataset(data, frame_cache=Path(tmp) / "frames")
        split = splits["test"]
        spec = MODELS[args.model]
        torch.manual_seed(0)
        model = spec.build(spec.config_cls(), dict(split.meta.dims)).eval()
        points = build_points(PROTOCOLS)

        def run(protocols):
            return evaluate_spectrum(
                model, splits, "test", protocols, seed=0, batch_size=args.batch_size
            )

        run("clean")  # warm-up: page cache, allocator, lazy imports
        clean_s = best_of(lambda: run("clean"), args.repeats)
        full_s = best_of(lambda: run(PROTOCOLS), args.repeats)

        started = time.perf_counter()
        cached = SpectrumEvaluator(split, points, seed=0, batch_size=args.batch_size, cache=True)
        prepare_s = time.perf_counter() - started
        sweep_s = best_of(lambda: cached.evaluate(model), 1)

    dims = split.meta.dims
    result = {
        "split": (
            f"synthetic mosi test ({len(split)} samples; "
            + ", ".join(f"{m} {d}" for m, d in dims.items())
            + " features per frame)"
        ),
        "model": f"{args.model} (default config, random init, eval mode)",
        "protocols": PROTOCOLS,
        "points": len(points),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "clean_pass_s": round(clean_s, 4),
        "full_s": round(full_s, 3),
        "ratio": round(full_s / (len(points) * clean_s), 3),
        "cached_prepare_s": round(prepare_s, 3),
        "cached_sweep_s": round(sweep_s, 3),
        "cached_sweep_ratio": round(sweep_s / (len(points) * clean_s), 3),
        "goal": "ratio <= 1.1",
        "date": time.strftime("%Y-%m-%d"),
    }
    suffix = "" if args.model == "late_fusion" else f"_{args.model}"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"spectrum_cost{suffix}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
