"""How far a model stays from the Bayes oracle as its training set grows (MOSI-shaped data).

The oracle knows the generator; a model learns it from ``train`` samples. If the excess of a
model's spectrum-averaged MAE over the oracle's shrinks as the training split grows (the
validation and test splits keeping their MOSI sizes), what stands between the model and the
ceiling is mostly estimation from 1284 samples; if it stays, it is the model (its pooling, its
capacity) or its training budget.

For each factor ``k`` (``--factors``, default 1 and 4) a synthetic dataset is generated with
the ``--preset``'s shapes and labels, its training split ``k`` times as large (generator seed
0: the same generator parameters at every ``k``, fresh samples), and the ``compare_models``
study of studies/configs/model_comparison.yaml trains ``--model`` on it alone (no reference
model) with the study's budget (at most 20 epochs, patience 5): its validation and test
spectrum scores beside the oracle's on the same corrupted inputs. Runs are logged to MLflow as
the study logs them; the summary goes to benchmarks/results/data_size_<preset>.json.

    .venv/bin/python benchmarks/data_size.py [--preset mosi] [--model qa_moe]
        [--factors 1 4] [--root DIR] [--set key.path=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUDY = HERE.parent / "studies" / "configs" / "model_comparison.yaml"


def dataset(root: Path, preset: str, factor: int) -> Path:
    """The preset with a ``factor`` times larger training split under ``root`` (made once)."""
    from robustmsa.data.synthetic import PRESETS, generate

    spec = PRESETS[preset]
    out = root / f"{preset}_train_x{factor}"
    if not out.exists():
        sizes = spec.split_sizes | {"train": spec.split_sizes["train"] * factor}
        generate(dataclasses.replace(spec, split_sizes=sizes), out, seed=0,
                 name=f"{preset}-train-x{factor}")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mosi")
    parser.add_argument("--model", default="qa_moe")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--root", type=Path, default=Path(".robustmsa/benchmarks/data_size"))
    args = parser.parse_args()
    if any(k < 1 for k in args.factors):
        parser.error(f"--factors: each must be >= 1, got {args.factors}")
    from robustmsa.config import load
    from robustmsa.search.kinds.base import ORACLE
    from robustmsa.search.study import run_study

    args.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "preset": args.preset,
        "model": args.model,
        "overrides": args.overrides,
        "factors": {},
    }
    for factor in args.factors:
        path = dataset(args.root, args.preset, factor)
        overrides = [
            "data.source=parquet",
            f"data.path={path}",
            f"compare_models.models={{{args.model}: {{name: {args.model}}}}}",
            "study.reference_model=null",
            *args.overrides,
        ]
        begun = time.perf_counter()
        result = run_study(load(STUDY, overrides), root=args.root)
        score = {(r.split, r.model): r.value for r in result.rows if r.summary == "spectrum_mae"}
        entry = {"parent_run_id": result.parent_run_id, "tracking_uri": result.tracking_uri}
        for split in ("valid", "test"):
            mine, oracle = score[(split, args.model)], score[(split, ORACLE)]
            entry[split] = {
                "spectrum_score": round(mine, 4),
                "oracle": round(oracle, 4),
                "excess": round(mine - oracle, 4),
                "relative_excess": round((mine - oracle) / oracle, 4),
            }
        entry["wall_s"] = round(time.perf_counter() - begun, 1)
        record["factors"][str(factor)] = entry
        print(f"train x{factor}: {json.dumps(entry)}", flush=True)
    record["wall_s"] = round(time.perf_counter() - started, 1)
    out = HERE / "results" / f"data_size_{args.preset}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{record['wall_s']} s; written {out}")


if __name__ == "__main__":
    main()
