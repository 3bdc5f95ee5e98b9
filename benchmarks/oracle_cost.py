"""Cost of the Bayes oracle's ceiling relative to the model it is drawn beside.

A completed trial's test evaluation scores the model and the oracle on the same points
(`evaluation.ceiling.oracle_rows`). On the MOSI-shaped synthetic test split, at the study's
report protocols (``clean, missing, noise, joint, patterns, random, grid``; one torch thread,
as a finishing task runs):

- ``model_s``: QA-MoE at the QA-MoE search study's size (hidden 64, expert hidden 128), one
  `SpectrumEvaluator.evaluate`;
- ``oracle_s``: the oracle on the same evaluator, one pass;
- ``oracle_one_shot_sums_s``: the same with the oracle's per-sample frame sums done the way
  they were before (the whole batch converted to float64, masked, summed over frames), to
  show what the chunked sums (`robustmsa.data.oracle._valid_frame_sums`) changed;
- ``oracle_again_s``: `oracle_rows` a second time in the process (its memo);
- ``frame_sums_ms``: the frame sums alone on one text batch (128 x 50 x 768), one-shot vs
  chunked, and the largest difference of their values.

    .venv/bin/python benchmarks/oracle_cost.py [--preset temporal]

Results go to benchmarks/results/oracle_cost.json (``--preset temporal``: the MOSI-shaped
preset with a window and a polarity cue, whose oracle is a mixture over 32 hypotheses, to
oracle_cost_temporal.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PROTOCOLS = ["clean", "missing", "noise", "joint", "patterns", "random", "grid"]


def one_shot_frame_sums(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The frame sums as the oracle computed them before the chunked version (B, d)."""
    return (x.to(torch.float64) * valid[..., None]).sum(dim=1)


def timed(run) -> tuple[float, object]:
    started = time.perf_counter()
    out = run()
    return time.perf_counter() - started, out


def per_call_ms(run, repeats: int = 20) -> float:
    run()
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - started) / repeats * 1e3


def main() -> None:
    from robustmsa.data import oracle as oracle_module
    from robustmsa.data.oracle import Oracle
    from robustmsa.data.parquet import open_dataset
    from robustmsa.data.synthetic import generate
    from robustmsa.evaluation import ceiling
    from robustmsa.evaluation.ceiling import OracleModel, oracle_rows
    from robustmsa.evaluation.spectrum import SpectrumEvaluator
    from robustmsa.models import MODELS
    from robustmsa.spectrum import build_points

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["mosi", "temporal"], default="mosi")
    preset = parser.parse_args().preset
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = generate(preset, Path(tmp) / preset, seed=0)
        split = open_dataset(data, frame_cache=Path(tmp) / "frames")["test"]
        spec = MODELS["qa_moe"]
        torch.manual_seed(0)
        config = spec.config_cls(hidden=64, expert_hidden=128)
        model = spec.build(config, dict(split.meta.dims)).eval()
        points = build_points(PROTOCOLS)
        evaluator = SpectrumEvaluator(split, points, seed=0, batch_size=128, cache=False)
        oracle = OracleModel(Oracle.load(data))

        evaluator.evaluate(model)  # warm-up: page cache, allocator, lazy imports
        model_s, _ = timed(lambda: evaluator.evaluate(model))
        oracle_s, chunked_rows = timed(lambda: evaluator.evaluate(oracle))
        chunked = oracle_module._valid_frame_sums
        oracle_module._valid_frame_sums = one_shot_frame_sums
        try:
            one_shot_s, one_shot_rows = timed(lambda: evaluator.evaluate(oracle))
        finally:
            oracle_module._valid_frame_sums = chunked
        ceiling._MEMO.clear()
        first_s, _ = timed(lambda: oracle_rows(evaluator))
        again_s, _ = timed(lambda: oracle_rows(evaluator))

        generator = torch.Generator().manual_seed(0)
        x = torch.randn(128, 50, split.meta.dims["text"], generator=generator)
        valid = torch.rand(128, 50, generator=generator) > 0.3
        sums_before = per_call_ms(lambda: one_shot_frame_sums(x, valid))
        sums_after = per_call_ms(lambda: chunked(x, valid))
        sums_diff = float((one_shot_frame_sums(x, valid) - chunked(x, valid)).abs().max())

    # Both NaN (a correlation of constant predictions) counts as equal.
    rows_diff = max(
        0.0 if math.isnan(a["value"]) and math.isnan(b["value"]) else abs(a["value"] - b["value"])
        for a, b in zip(chunked_rows, one_shot_rows, strict=True)
    )
    result = {
        "split": f"synthetic {preset} test ({len(split)} samples)",
        "protocols": PROTOCOLS,
        "points": len(points),
        "batch_size": 128,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "model_s": round(model_s, 2),
        "oracle_s": round(oracle_s, 2),
        "oracle_one_shot_sums_s": round(one_shot_s, 2),
        "oracle_over_model": round(oracle_s / model_s, 3),
        "oracle_one_shot_sums_over_model": round(one_shot_s / model_s, 3),
        "oracle_rows_first_s": round(first_s, 2),
        "oracle_rows_again_s": round(again_s, 4),
        "max_row_difference_one_shot_vs_chunked": rows_diff,
        "frame_sums_ms": {"one_shot": round(sums_before, 2), "chunked": round(sums_after, 2)},
        "frame_sums_max_difference": sums_diff,
        "date": time.strftime("%Y-%m-%d"),
    }
    (HERE / "results").mkdir(exist_ok=True)
    name = "oracle_cost.json" if preset == "mosi" else f"oracle_cost_{preset}.json"
    (HERE / "results" / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
