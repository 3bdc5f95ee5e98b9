"""Epoch iteration throughput of the reader paths on the MOSI-shaped synthetic train split.

Paths, each measured in this one run (best of ``--repeats`` epochs, batch size 32):

- ``in_memory``: the split as padded tensors in memory, batches by index (the baseline);
- ``parquet_mmap``: `ParquetSplit.batch` on the memory-mapped file (the training default);
- ``torch_dataloader``: `robustmsa.data.torch_loader.batch_loader`, no worker processes;
- ``ray_data``: `robustmsa.training.ray_data_reader.ray_batches` (file order only).

    .venv/bin/python benchmarks/reader_paths.py [--repeats 3]

Results go to benchmarks/results/reader_paths.json (throughput as a fraction of in-memory).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def best_epoch(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from robustmsa.data.parquet import open_dataset
    from robustmsa.data.synthetic import generate
    from robustmsa.data.torch_loader import batch_loader

    with tempfile.TemporaryDirectory() as tmp:
        data = generate("mosi", Path(tmp) / "mosi", seed=0)
        split = open_dataset(data, frame_cache=Path(tmp) / "frames")["train"]
        order = np.random.default_rng(0).permutation(len(split))
        full = split.batch(np.arange(len(split)))

        def in_memory(rows=order):
            for i in range(0, len(rows), 32):
                full.subset(torch.from_numpy(rows[i : i + 32]))

        def mmap(rows=order):
            for _ in split.batches(32, rows):
                pass

        def loader(shuffle=True):
            for _ in batch_loader(split, 32, shuffle=shuffle, seed=0):
                pass

        file_order = np.arange(len(split))
        shuffled = {
            "in_memory": best_epoch(in_memory, args.repeats),
            "parquet_mmap": best_epoch(mmap, args.repeats),
            "torch_dataloader": best_epoch(loader, args.repeats),
        }
        in_file_order = {
            "in_memory": best_epoch(lambda: in_memory(file_order), args.repeats),
            "parquet_mmap": best_epoch(lambda: mmap(file_order), args.repeats),
            "torch_dataloader": best_epoch(lambda: loader(False), args.repeats),
        }
        import ray
        from robustmsa.training.ray_data_reader import ray_batches

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        in_file_order["ray_data"] = best_epoch(
            lambda: [None for _ in ray_batches(split, 32)], args.repeats
        )
        ray.shutdown()

    def ratios(times):
        return {k: round(times["in_memory"] / v, 2) for k, v in times.items()}

    result = {
        "split": "synthetic mosi train (1284 samples; text 50x768, audio 50x5, vision 50x20)",
        "epoch_s_shuffled": {k: round(v, 4) for k, v in shuffled.items()},
        "epoch_s_file_order": {k: round(v, 4) for k, v in in_file_order.items()},
        "throughput_vs_in_memory_shuffled": ratios(shuffled),
        "throughput_vs_in_memory_file_order": ratios(in_file_order),
        "date": time.strftime("%Y-%m-%d"),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "reader_paths.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
