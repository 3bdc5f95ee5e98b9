"""P5: how much compute the default search (seeded TPE + ASHA) needs against random search.

For each search seed, two studies of the default config (studies/configs/qa_moe_search.yaml:
QA-MoE trials of 8 epochs on MOSI-shaped data within a budget of trial-epochs; the reference
model off, as it does not take part in the search):

- ``tpe_asha``: the default, Optuna's TPE, ASHA pruning, as many trials (up to
  ``search.num_samples``) as its budget allows: ``search.trial_epoch_budget``, or
  ``search.num_samples`` x ``training.epochs`` when it sets none;
- ``random``: twice that budget as whole trials (budget x 2 / epochs of them), Optuna's random
  sampler, no pruning (``search.sampler: random``, ``search.scheduler: none``).

Random search draws from a seed stream of its own (``search.seed`` + `RANDOM_SEED_OFFSET`): with
the default's seed, both studies shared their first random points, and a random search whose
best was among them reached it as early as the default did (a ratio near 1 by construction).

The target is random search's best validation spectrum score at its (double) budget. For each
study, the compute to reach it is the number of trial-epochs trained, counted in the order Tune
received them (every trial's ``result.json``), until some epoch's validation spectrum score is
at or below the target (infinite when never). The ratio tpe_asha / random per seed, and its
median over seeds, is the number to watch: goal at most 0.5. Its 95 % interval
(`median_interval`: the seeds resampled with replacement, the 2.5th and 97.5th percentiles of
the resampled medians) says how far ten seeds pin it down; ``--summarise FILE...`` prints the
median and interval of earlier records without training anything.

    .venv/bin/python benchmarks/search_efficiency.py [--seeds 0 1 2 3 4] [--root /tmp/p5]
        [--set key.path=value ...] [--name NAME] [--random-from results/A.json ...]
    .venv/bin/python benchmarks/search_efficiency.py --summarise results/A.json ...

Results go to benchmarks/results/search_efficiency.json, or search_efficiency_<preset>.json
for another synthetic preset (``--set data.preset=temporal``), or NAME.json. ``--set`` applies
to both studies. ``--random-from`` takes random search's side of each seed from earlier
records instead of running it again: only where the record's random study is the one this run
would train (the sha256 of its resolved config, ``config_sha256``, is compared; a record from
before that field existed is taken on the word of ``--random-from``, and the output says so).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
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


def median_interval(ratios: list[float], draws: int = 10_000, seed: int = 0) -> list[float]:
    """A 95 % percentile-bootstrap interval of the median of ``ratios`` (inf where a seed never
    reached the target: such a median is inf), over resamples of the seeds."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return [medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]]


def summarise(paths: list[Path]) -> None:
    """One line per record: its median ratio, interval and seeds reached."""
    for path in paths:
        record = json.loads(path.read_text())
        ratios = [row["ratio"] for row in record["per_seed"]]
        low, high = median_interval(ratios)
        reached = sum(map(math.isfinite, ratios))
        print(f"{path.name}: median ratio {statistics.median(ratios):.3f}, 95 % interval "
              f"[{low:.3f}, {high:.3f}], reached {reached}/{len(ratios)}")  # fmt: skip


def study_config(seed: int, variant: str, extra: list[str]):
    """The resolved config of one side of one seed (module docstring)."""
    from robustmsa.config import load

    overrides = {"study.reference_model": "null", "search.seed": seed}
    if variant == "random":
        base = load(STUDY, extra)
        s, epochs = base.kind_section, base.training.epochs
        budget = s.trial_epoch_budget or s.num_samples * epochs
        overrides |= {
            "search.seed": seed + RANDOM_SEED_OFFSET,
            "search.sampler": "random",
            "search.scheduler": "none",
            "search.num_samples": math.ceil(2 * budget / epochs),
            "search.trial_epoch_budget": "null",  # whole trials: at most twice the budget
            "search.startup_trials": "null",  # a random sampler has no start-up phase
        }
    return load(STUDY, [*extra, *(f"{k}={v}" for k, v in overrides.items())])


def run(root: Path, seed: int, variant: str, extra: list[str]) -> list[float]:
    from robustmsa.search.study import run_study

    config = study_config(seed, variant, extra)
    where = root / f"seed{seed}-{variant}"
    where.mkdir(parents=True, exist_ok=True)
    result = run_study(config, root=where)
    return epochs_in_order(Path(result.storage_path), f"{config.name}-{result.parent_run_id[:8]}")


def config_digest(config) -> str:
    """A fingerprint of a resolved study config (sha256 of its sorted JSON)."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def random_side(scores: list[float], digest: str) -> dict:
    """Random search's side of a seed: its best, its trial-epochs trained and to the best."""
    best = min(scores)
    return {"best": best, "trained": len(scores), "to_best": epochs_to_reach(scores, best),
            "config_sha256": digest}  # fmt: skip


def recorded_random(paths: list[Path], extra: list[str]) -> dict[int, dict]:
    """Random search's side of every seed recorded in ``paths`` (a later file wins), each
    checked against the random study this run would train (module docstring)."""
    sides = {}
    for path in paths:
        record = json.loads(path.read_text())
        if record.get("random_seed_offset") != RANDOM_SEED_OFFSET:
            raise SystemExit(f"{path}: random_seed_offset {record.get('random_seed_offset')} "
                             f"is not this benchmark's {RANDOM_SEED_OFFSET}")  # fmt: skip
        for row in record["per_seed"]:
            side = row.get("random") or {  # records from before the random side had its own
                "best": row["target"],
                "trained": row["trial_epochs_trained"]["random"],
                "to_best": row["trial_epochs_to_target"]["random"],
            }
            want = config_digest(study_config(row["seed"], "random", extra))
            if side.get("config_sha256", want) != want:
                raise SystemExit(f"{path}: seed {row['seed']}: its random study is not the one "
                                 "this run would train (config_sha256 differs)")  # fmt: skip
            sides[row["seed"]] = side | {"from": path.name,
                                         "compared": "config_sha256" in side}  # fmt: skip
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--root", type=Path, default=Path("/tmp/robustmsa-search-efficiency"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--name", help="results go to <name>.json (default: search_efficiency[_<preset>])"
    )
    parser.add_argument(
        "--random-from", type=Path, nargs="+", default=[],
        help="take random search's side of each seed from these earlier results",
    )  # fmt: skip
    parser.add_argument(
        "--summarise", type=Path, nargs="+", default=[],
        help="print the median ratio and its interval of these records, and train nothing",
    )  # fmt: skip
    args = parser.parse_args()
    if args.summarise:
        summarise(args.summarise)
        return
    from robustmsa.config import load

    preset = load(STUDY, args.overrides).data.preset  # a bad override fails before any study
    reused = recorded_random([p.resolve() for p in args.random_from], args.overrides)
    started = time.time()
    per_seed = []
    for seed in args.seeds:
        random = reused.get(seed) or random_side(
            run(args.root, seed, "random", args.overrides),
            config_digest(study_config(seed, "random", args.overrides)),
        )
        scores = run(args.root, seed, "tpe_asha", args.overrides)
        target = random["best"]
        need = {"random": random["to_best"], "tpe_asha": epochs_to_reach(scores, target)}
        per_seed.append(
            {
                "seed": seed,
                "target": target,
                "trial_epochs_trained": {"random": random["trained"], "tpe_asha": len(scores)},
                "trial_epochs_to_target": need,
                "best": {"random": target, "tpe_asha": min(scores)},
                "ratio": need["tpe_asha"] / need["random"],
                "random": random,
            }
        )
        print(json.dumps(per_seed[-1], default=str))
    ratios = [r["ratio"] for r in per_seed]
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "config": str(STUDY.relative_to(HERE.parent)),
        "overrides": args.overrides,
        "preset": preset,
        "seeds": args.seeds,
        "random_seed_offset": RANDOM_SEED_OFFSET,
        "random_from": sorted({r["random"]["from"] for r in per_seed if "from" in r["random"]}),
        "per_seed": per_seed,
        "median_ratio": statistics.median(ratios),
        "median_ratio_interval95": median_interval(ratios),
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
