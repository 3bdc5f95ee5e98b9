"""Where one training step's time goes: reading the batch, corrupting it, copying it, computing.

`step_time.py` times whole steps of the loop's `train_epoch`; this splits a step into the parts
that `train_epoch` runs one after the other, each timed to its end (on a GPU after a
``torch.cuda.synchronize()``, so queued kernels are counted in the part that queued them):

- ``read``: ``ParquetSplit.batch(rows)`` (memory-mapped split to a CPU `Batch`);
- ``corrupt``: the training sampler (continuous spectrum, ``p_drop 0.1``) on that CPU batch;
- ``copy``: ``Batch.to(device)``;
- ``compute``: forward, L1 task loss + weighted auxiliary losses, zero grad, backward, gradient
  clipping, AdamW step and the per-step ``float(loss)``.

Models are built as `step_time.make_step` builds them (ProMMA in its full stage), on the synthetic
``mosi`` preset's train split, batch ``--batch-size``, one torch thread. Medians over ``--steps``
steps after ``--warmup``.

    .venv/bin/python benchmarks/step_parts.py [--device cuda] [--models late_fusion qa_moe] \\
        [--out FILE]

Results go to benchmarks/results/step_parts.json unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from step_time import batches, training_setup

HERE = Path(__file__).resolve().parent
PARTS = ("read", "corrupt", "copy", "compute")


def measure(name: str, split, device: torch.device, batch_size: int, warmup: int, steps: int):
    """Median milliseconds of each part of ``steps`` training steps of model ``name``."""
    from robustmsa.training.loop import task_loss

    config, model, optimizer, sampler, parameters, _, generator = training_setup(
        name, split, batch_size, device
    )
    if parameters is None:
        parameters = list(model.parameters())
    weights = model.aux_loss_weights()
    model.train()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    source = batches(len(split), batch_size)
    times: dict[str, list[float]] = {p: [] for p in PARTS}
    for i in range(warmup + steps):
        rows = next(source)
        marks = [time.perf_counter()]
        batch = split.batch(rows)
        marks.append(time.perf_counter())
        batch = sampler(batch, generator)
        marks.append(time.perf_counter())
        batch = batch.to(device)
        sync()
        marks.append(time.perf_counter())
        out = model(batch)
        loss = task_loss(out, batch.labels, model)
        loss = loss + sum(weights.get(k, 0.0) * v.float() for k, v in out.aux_losses.items())
        model.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.training.grad_clip)
        optimizer.step()
        float(loss.detach())
        sync()
        marks.append(time.perf_counter())
        if i >= warmup:
            for part, a, b in zip(PARTS, marks[:-1], marks[1:], strict=True):
                times[part].append(1e3 * (b - a))
    return {p: round(statistics.median(v), 2) for p, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "step_parts.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from robustmsa.data.parquet import open_dataset
    from robustmsa.data.synthetic import generate
    from robustmsa.models import MODELS

    device = torch.device(args.device)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = generate("mosi", Path(tmp) / "mosi", seed=0)
        split = open_dataset(data, frame_cache=Path(tmp) / "frames")["train"]
        for name in args.models or list(MODELS):
            rows[name] = measure(name, split, device, args.batch_size, args.warmup, args.steps)
            print(name, " ".join(f"{p} {ms:.2f} ms" for p, ms in rows[name].items()), flush=True)
    result = {
        "what": "median ms of each part of a training step (train_epoch's order), "
        "one torch thread, synthetic mosi train split",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "median_ms": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
