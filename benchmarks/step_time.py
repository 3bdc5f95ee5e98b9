"""Training step time of each registered model relative to late fusion, at MOSI shapes.

Data: the synthetic ``mosi`` preset (text 50x768, audio 50x5, vision 50x20 features per frame;
1284 training samples), generated with `robustmsa.data.synthetic.generate` and opened with
`open_dataset`, as the training loop reads it; real batches of its train split.

Same encoders: every model gets its text as the preset's feature frames (the default
``TextInput`` mode, ``text.kind: features``); no BERT encoder anywhere. Every model is built by
`robustmsa.training.loop.build_model` from a default `StudyConfig` naming it (its config class's
defaults; ``training.*`` and ``spectrum.*`` at their defaults too, batch size aside).

What is timed, per step: one call of the loop's own `robustmsa.training.loop.train_epoch` on
ONE batch of rows (``order`` = the batch's row indices), i.e. exactly what the loop does per
batch: read the rows from the memory-mapped split (`ParquetSplit.batch`), corrupt them with the
training sampler (`build_sampler(spectrum)`: ``continuous``, ``p_corrupt 1``, ``p_drop 0.1``),
forward, L1 task loss + the model's weighted auxiliary losses, zero the gradients, backward,
gradient clipping (``grad_clip 1``), AdamW step, and the per-step ``float(loss)`` of the
metrics. The per-call extras of `train_epoch` (``model.train()``, ``aux_loss_weights()``, the
final averaging) run once per epoch in the loop and here once per step: microseconds, against
step times of milliseconds. The optimizer, sampler and generator are built as `run_training`
builds them. Every model sees the same batches (the loop's seeded per-epoch permutations, full
batches only) with the same corruption draws (same generator seed).

ProMMA trains in two stages; its FULL stage (the expensive one) is timed: the model goes
through ``set_stage("reference")`` then ``set_stage("full")`` as in the loop (so the reference
snapshot is taken and the full stage computes pseudo labels with the reference model), with the
full stage's parameters (`stage_parameters`), optimizer and sampler (`stage_sampler`).

Method: ``--threads`` torch threads (default 1), ``--warmup`` steps per model, then ``--rounds``
rounds; in each round every model runs ``--steps`` timed steps, the models interleaved step by
step (A, B, ..., A, B, ..., each model on the same rows; the order rotated per round) so
background load hits all alike. Reported, for two clocks (wall time and this process's CPU time,
which leaves out the time other work on a shared machine holds the cores): the median step time
(ms) over all timed steps of a model and its ratio to late fusion's median; per-round medians
and ratios too.

On a GPU (``--device cuda``) the model and every batch live on the device and the loop's
per-step ``float(loss)`` waits for the step's kernels, so the wall clock times whole steps;
``--precision bf16`` runs the forward under ``torch.autocast`` as ``training.precision: bf16``
does.

    .venv/bin/python benchmarks/step_time.py [--batch-sizes 32 64] [--device cuda] \
        [--precision bf16] [--out FILE]

Results go to benchmarks/results/step_time.json unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
BASELINE = "late_fusion"


def training_setup(name: str, split, batch_size: int, device: torch.device):
    """What `run_training` builds for model ``name`` before its last stage's first step:
    ``(config, model on device, optimizer, sampler, parameters or None, stage name or None,
    generator)``; ``parameters``: the stage's (ProMMA: full), None: all of the model's."""
    from robustmsa.config import from_dict
    from robustmsa.spectrum import build_sampler
    from robustmsa.training.loop import (
        build_model,
        seed_everything,
        stage_parameters,
        stage_sampler,
        training_stages,
    )

    config = from_dict({"model": {"name": name}, "training": {"batch_size": batch_size}})
    t = config.training
    seed_everything(t.seed)
    model = build_model(config, split.meta.dims).to(device)
    sampler = build_sampler(config.spectrum)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    parameters, stage_name = None, None
    stages = training_stages(model)
    if stages:  # as run_training on entering each stage; the last one (ProMMA: full) is timed
        for stage in stages:
            model.set_stage(stage.name)
        stage = stages[-1]
        stage_name = stage.name
        parameters = stage_parameters(model, stage)
        optimizer = torch.optim.AdamW(parameters, lr=t.lr, weight_decay=t.weight_decay)
        sampler = stage_sampler(stage, sampler)
    generator = torch.Generator().manual_seed(t.seed * 7919)  # rank 0
    return config, model, optimizer, sampler, parameters, stage_name, generator


def make_step(name: str, split, batch_size: int, device: str = "cpu", precision: str = "fp32"):
    """``(step(rows), info)``: one training step of model ``name`` on the rows ``rows``,
    through `train_epoch`, with the model, optimizer, sampler and generator of `run_training`.
    """
    from robustmsa.training.loop import AUTOCAST_DTYPES, train_epoch

    device = torch.device(device)
    config, model, optimizer, sampler, parameters, stage_name, generator = training_setup(
        name, split, batch_size, device
    )
    t = config.training

    def step(rows: np.ndarray) -> dict[str, float]:
        return train_epoch(
            model,
            split,
            rows,
            optimizer=optimizer,
            sampler=sampler,
            generator=generator,
            batch_size=batch_size,
            grad_clip=t.grad_clip,
            device=device,
            parameters=parameters,
            autocast=AUTOCAST_DTYPES[precision],
        )

    info = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_parameters": sum(
            p.numel() for p in (parameters if parameters is not None else model.parameters())
        ),
        "stage": stage_name,
        "aux_losses": sorted(k for k, w in model.aux_loss_weights().items() if w),
    }
    return step, info


def batches(n: int, batch_size: int, seed: int = 0):
    """Full batches of the loop's per-epoch permutations (``default_rng([seed, epoch])``),
    epoch after epoch."""
    epoch = 1
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]
        epoch += 1


def summarise(times: dict[str, list[list[float]]]) -> dict:
    """Medians (ms) over all timed steps, ratios to late fusion, per-round medians/ratios."""
    median = {n: statistics.median(t for rnd in v for t in rnd) for n, v in times.items()}
    base = median[BASELINE]
    return {
        "median_step_ms": {n: round(1e3 * v, 2) for n, v in median.items()},
        "ratio_to_late_fusion": {n: round(v / base, 2) for n, v in median.items()},
        "per_round_median_ms": {
            n: [round(1e3 * statistics.median(rnd), 2) for rnd in v] for n, v in times.items()
        },
        "per_round_ratio_to_late_fusion": {
            n: [
                round(statistics.median(a) / statistics.median(b), 2)
                for a, b in zip(v, times[BASELINE], strict=True)
            ]
            for n, v in times.items()
        },
    }


def measure(split, models: list[str], batch_size: int, args) -> dict:
    steps, infos = {}, {}
    for name in models:
        steps[name], infos[name] = make_step(name, split, batch_size, args.device, args.precision)
    # The same batch sequence for every model: one list, replayed per model.
    source = batches(len(split), batch_size)
    warm = [next(source) for _ in range(args.warmup)]
    rounds = [[next(source) for _ in range(args.steps)] for _ in range(args.rounds)]
    for name in models:
        for rows in warm:
            steps[name](rows)
    wall: dict[str, list[list[float]]] = {name: [] for name in models}
    cpu: dict[str, list[list[float]]] = {name: [] for name in models}
    for r, rows_list in enumerate(rounds):
        for name in models:
            wall[name].append([])
            cpu[name].append([])
        # Interleaved step by step (A, B, ..., A, B, ...) on the same rows; the order rotated
        # per round, so no model always runs first (or right after the largest).
        order = models[r % len(models) :] + models[: r % len(models)]
        for rows in rows_list:
            for name in order:
                started, started_cpu = time.perf_counter(), time.process_time()
                steps[name](rows)
                cpu[name][-1].append(time.process_time() - started_cpu)
                wall[name][-1].append(time.perf_counter() - started)
        print(
            f"  batch {batch_size} round {r + 1}/{args.rounds} (median wall ms): "
            + ", ".join(f"{n} {1e3 * statistics.median(wall[n][-1]):.1f}" for n in models),
            flush=True,
        )
    return {
        "batch_size": batch_size,
        "wall": summarise(wall),
        "process_cpu": summarise(cpu),
        "models": infos,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every registered")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "step_time.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from robustmsa.data.parquet import open_dataset
    from robustmsa.data.synthetic import PRESETS, generate
    from robustmsa.models import MODELS

    models = args.models or list(MODELS)
    models = [BASELINE] + [m for m in models if m != BASELINE]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = generate("mosi", Path(tmp) / "mosi", seed=0)
        split = open_dataset(data, frame_cache=Path(tmp) / "frames")["train"]
        for batch_size in args.batch_sizes:
            results.append(measure(split, models, batch_size, args))
        n = len(split)
    lengths = PRESETS["mosi"].lengths

    result = {
        "split": (
            f"synthetic mosi train ({n} samples; "
            + ", ".join(f"{m} {lengths[m]}x{d}" for m, d in PRESETS["mosi"].dims.items())
            + "), text as feature frames (no BERT)"
        ),
        "step": (
            "robustmsa.training.loop.train_epoch on one batch: read, continuous-spectrum "
            "corruption, forward, L1 + weighted aux losses, backward, clip, AdamW step"
        ),
        "promma": "full stage (after the reference snapshot)",
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "precision": args.precision,
        "warmup_steps": args.warmup,
        "timed_steps_per_round": args.steps,
        "rounds": args.rounds,
        "clocks": (
            "wall: time.perf_counter; process_cpu: time.process_time (this process's CPU time, "
            "user + system: what the step computes, without the time the shared machine's "
            "other work holds the cores)"
        ),
        "results": results,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in results:
        wall, cpu = r["wall"], r["process_cpu"]
        print(f"\nbatch {r['batch_size']}: median step time (ms) and ratio to {BASELINE}")
        print(f"  {'model':<12} {'wall ms':>9} {'ratio':>6} {'cpu ms':>9} {'ratio':>6}")
        for name, ms in wall["median_step_ms"].items():
            print(
                f"  {name:<12} {ms:>9.2f} {wall['ratio_to_late_fusion'][name]:>6.2f} "
                f"{cpu['median_step_ms'][name]:>9.2f} {cpu['ratio_to_late_fusion'][name]:>6.2f}"
            )


if __name__ == "__main__":
    main()
