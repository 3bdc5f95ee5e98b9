"""P5: how much compute the default search (seeded TPE + ASHA) needs against random search.

For each search seed, two studies of the default config (studies/configs/qa_moe_search.yaml,
8 QA-MoE trials of 8 epochs on MOSI-shaped data; the reference model off, as it does not take
part in the search):

- ``tpe_asha``: the default, ``search.num_samples`` trials, Optuna's TPE, ASHA pruning;
- ``random``: twice the trials, Optuna's random sampler, no pruning (``search.sampler: random``,
  ``search.scheduler: none``).

Random search draws from a seed stream of its own (``search.seed`` + `RANDOM_SEED_OFFSET`): with
the default's seed, both studies shared their first random points, and a random search whose
best was among them reached it as early as the default did (a ratio near 1 by construction).

The target is random search's best validation spectrum score at its (double) budget. For each
study, the compute to reach it is the number of trial-epochs trained, counted in the order Tune
received them (every trial's ``result.json``), until some epoch's validation spectrum score is
at or below the target (infinite when never). The ratio tpe_asha / random per seed, and its
median over seeds, is the number to watch: goal at most 0.5.

    .venv/bin/python benchmarks/search_efficiency.py [--seeds 0 1 2 3 4] [--root /tmp/p5]
        [--set key.path=value ...] [--name NAME]

Results go to benchmarks/results/search_efficiency.json, or search_efficiency_<preset>.json
for another synthetic preset (``--set data.preset=temporal``), or NAME.json. ``--set`` applies
to both studies.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from study_cost import trial_reports

HERE = Path(__file__).resolve().parent
STUDY = HERE.parent / "studies" / "configs" / "qa_moe_search.yaml"
SCORE = "val/spectrum_score"  # robustmsa.training.loop.OBJECTIVE, one epoch's score
RANDOM_SEED_OFFSET = 1000  # random search's seed stream, apart from the default's


def epochs_in_order(storage: Path, experiment_dir: str) -> list[float]:
    """Every trial-epoch's validation score, in the order Tune received them."""
    reports = [r for rs in trial_reports(storage, experiment_dir).values() for r in rs]
    return [r[SCORE] for r in sorted(reports, key=lambda r: r["timestamp"]) if SCORE in r]


def epochs_to_reach(scores: list[float], target: float) -> float:
    """Trial-epochs trained until a score at or below ``target`` (inf when never)."""
    for i, score in enumerate(scores, start=1):
        if score <= target:
            return i
    return math.inf


def run(root: Path, seed: int, variant: str, extra: list[str]) -> list[float]:
    from robustmsa.config import load
    from robustmsa.search.study import run_study

    overrides = {"study.reference_model": "null", "search.seed": seed}
    if variant == "random":
        base = load(STUDY, extra)
        overrides |= {
            "search.seed": seed + RANDOM_SEED_OFFSET,
            "search.sampler": "random",
            "search.scheduler": "none",
            "search.num_samples": 2 * base.kind_section.num_samples,
        }
    config = load(STUDY, [*extra, *(f"{k}={v}" for k, v in overrides.items())])
    where = root / f"seed{seed}-{variant}"
    where.mkdir(parents=True, exist_ok=True)
    result = run_study(config, root=where)
    return epochs_in_order(Path(result.storage_path), f"{config.name}-{result.parent_run_id[:8]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--root", type=Path, default=Path("/tmp/robustmsa-search-efficiency"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--name", help="results go to <name>.json (default: search_efficiency[_<preset>])"
    )
    args = parser.parse_args()
    from robustmsa.config import load

    preset = load(STUDY, args.overrides).data.preset  # a bad override fails before any study
    started = time.time()
    per_seed = []
    for seed in args.seeds:
        scores = {v: run(args.root, seed, v, args.overrides) for v in ("random", "tpe_asha")}
        target = min(scores["random"])
        need = {v: epochs_to_reach(s, target) for v, s in scores.items()}
        per_seed.append(
            {
                "seed": seed,
                "target": target,
                "trial_epochs_trained": {v: len(s) for v, s in scores.items()},
                "trial_epochs_to_target": need,
                "best": {v: min(s) for v, s in scores.items()},
                "ratio": need["tpe_asha"] / need["random"],
            }
        )
        print(json.dumps(per_seed[-1]))
    ratios = [r["ratio"] for r in per_seed]
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "config": str(STUDY.relative_to(HERE.parent)),
        "overrides": args.overrides,
        "preset": preset,
        "seeds": args.seeds,
        "random_seed_offset": RANDOM_SEED_OFFSET,
        "per_seed": per_seed,
        "median_ratio": statistics.median(ratios),
        "reached": sum(math.isfinite(r) for r in ratios),
        "goal_ratio_at_most": 0.5,
        "wall_s": round(time.time() - started, 1),
    }
    name = args.name or ("search_efficiency" if preset == "mosi" else f"search_efficiency_{preset}")
    out = HERE / "results" / f"{name}.json"
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"median ratio {record['median_ratio']} (goal <= 0.5), reached in "
          f"{record['reached']}/{len(ratios)} seeds; wall {record['wall_s']} s")  # fmt: skip


if __name__ == "__main__":
    main()
