"""One checkpoint for the whole spectrum against per-level specialists, over training seeds.

The ``one_checkpoint_for_all`` study (studies/configs/one_checkpoint_for_all.yaml) trains, for
one training seed, one model on the continuous spectrum and one specialist per level of the
compared curve (each trained at that level only), and evaluates them on the same validation
points. This script runs it for ``--seeds`` training seeds (``training.seed`` = 0..N-1; the
data and the evaluation points stay fixed) and records, over seeds (the same paired-seed
statistics as the ``confirm`` study: mean, sample std, 95 % Student-t interval):

- each curve's mean MAE over the levels: the one checkpoint's, the specialists' (each at its
  own level), and the paired difference one checkpoint minus specialists;
- the same per level;
- the Bayes oracle's curve where the data are synthetic (it does not depend on the training
  seed).

Every seed's study logs its own parent run, table and figure to MLflow; a summary run in the
same experiment (tag ``robustmsa.benchmark = specialists``) holds the table over seeds and a
figure of both curves with their intervals. The summary goes to
benchmarks/results/specialists_<name>.json and is printed as a table.

    .venv/bin/python benchmarks/specialists.py --name NAME [--seeds 5] [--root DIR] \\
        [--config studies/configs/one_checkpoint_for_all.yaml] [--set key.path=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE.parent / "studies" / "configs" / "one_checkpoint_for_all.yaml"
COMPARED = ("one_checkpoint", "per_rate")  # robustmsa.search.kinds.per_rate's model names
DIFFERENCE = "one_checkpoint - per_rate"


def seed_curves(rows, metric: str = "mae") -> dict[str, dict[float, float]]:
    """``{model: {level: value}}`` of one seed's curve table (`CurveRow` list)."""
    out: dict[str, dict[float, float]] = {}
    for r in rows:
        if r.metric == metric:
            out.setdefault(r.model, {})[r.level] = r.value
    return out


def over_seeds(curves: list[dict[str, dict[float, float]]]) -> dict:
    """Interval statistics over seeds of each compared model's mean over levels and of each
    level, and of the paired difference (``curves[i]``: seed i's `seed_curves`)."""
    from robustmsa.search.kinds.confirm import interval

    def stats(values: list[float]) -> dict:
        mean, std, low, high = interval(values)
        return {"mean": round(mean, 4), "std": round(std, 4), "ci_low": round(low, 4),
                "ci_high": round(high, 4), "n": len(values)}  # fmt: skip

    levels = sorted(curves[0][COMPARED[0]])
    series = {m: [[c[m][lv] for lv in levels] for c in curves] for m in COMPARED}
    series[DIFFERENCE] = [
        [a - b for a, b in zip(one, per, strict=True)]
        for one, per in zip(series[COMPARED[0]], series[COMPARED[1]], strict=True)
    ]
    return {
        model: {
            "mean_over_levels": stats([sum(s) / len(s) for s in per_seed]),
            "per_level": {str(lv): stats([s[i] for s in per_seed]) for i, lv in enumerate(levels)},
        }
        for model, per_seed in series.items()
    }


def log_summary(client, experiment_id: str, record: dict) -> str:
    """A run holding the table over seeds and the figure; its id."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    run = client.create_run(
        experiment_id,
        run_name=f"specialists-over-{record['seeds']}-seeds",
        tags={"robustmsa.benchmark": "specialists"},
    )
    rows = [
        {"model": m, "level": lv, **s}
        for m, entry in record["models"].items()
        for lv, s in [("mean", entry["mean_over_levels"]), *entry["per_level"].items()]
    ]
    client.log_table(run.info.run_id, pd.DataFrame(rows), "tables/specialists_over_seeds.json")
    fig, ax = plt.subplots(figsize=(6, 4))
    for model in COMPARED:
        per = record["models"][model]["per_level"]
        lv = [float(k) for k in per]
        mean = [v["mean"] for v in per.values()]
        ax.errorbar(
            lv, mean, yerr=[[m - v["ci_low"] for m, v in zip(mean, per.values(), strict=True)],
                            [v["ci_high"] - m for m, v in zip(mean, per.values(), strict=True)]],
            label=model, capsize=3, marker="o",
        )  # fmt: skip
    if record.get("oracle"):
        ax.plot([float(k) for k in record["oracle"]], list(record["oracle"].values()),
                "k--", label="oracle")  # fmt: skip
    ax.set_xlabel(f"{record['axis']} level")
    ax.set_ylabel("validation MAE")
    ax.set_title(f"one checkpoint vs specialists, {record['seeds']} seeds (95 % CI)")
    ax.legend()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "specialists_over_seeds.png"
        fig.savefig(path, dpi=100)
        client.log_artifact(run.info.run_id, str(path))
    plt.close(fig)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="results go to specialists_<name>.json")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path(".robustmsa/benchmarks/specialists"))
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error(f"--seeds: an interval needs at least 2 seeds, got {args.seeds}")
    from mlflow.tracking import MlflowClient
    from robustmsa.config import load
    from robustmsa.search.study import run_study

    config = load(args.config, args.overrides)  # refuses a bad config before anything runs
    args.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    curves, parents, result = [], [], None
    for seed in range(args.seeds):
        seeded = load(args.config, [*args.overrides, f"training.seed={seed}"])
        result = run_study(seeded, root=args.root)
        curves.append(seed_curves(result.rows))
        parents.append(result.parent_run_id)
    oracle = curves[0].get("oracle")
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "config": os.path.relpath(args.config.resolve(), HERE.parent),  # as typed from the root
        "overrides": args.overrides,
        "seeds": args.seeds,
        "axis": config.kind_section.axis,
        "parent_run_ids": parents,
        "tracking_uri": result.tracking_uri,
        "oracle": {str(k): round(v, 4) for k, v in sorted(oracle.items())} if oracle else None,
        "models": over_seeds(curves),
    }
    if oracle:
        record["oracle_mean_over_levels"] = round(sum(oracle.values()) / len(oracle), 4)
    client = MlflowClient(result.tracking_uri)
    record["summary_run_id"] = log_summary(client, result.experiment_id, record)
    record["wall_s"] = round(time.perf_counter() - started, 1)
    out = HERE / "results" / f"specialists_{args.name}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(format_table(record))
    print(f"{record['wall_s']} s; written {out}")


def format_table(record: dict) -> str:
    """Markdown: per level (and their mean) each model's MAE [95 % CI] and the paired
    difference, with the oracle where there is one."""
    from evidence import interval_cell as cell  # benchmarks/ is the script's sys.path[0]

    m = record["models"]
    oracle = record.get("oracle") or {}
    lines = [
        f"| {record['axis']} level | one checkpoint | specialists | difference | oracle |",
        "|---|---|---|---|---|",
    ]
    for lv in m[COMPARED[0]]["per_level"]:
        lines.append(
            f"| {lv} | {cell(m[COMPARED[0]]['per_level'][lv])} | "
            f"{cell(m[COMPARED[1]]['per_level'][lv])} | {cell(m[DIFFERENCE]['per_level'][lv])} "
            f"| {oracle.get(lv, '-')} |"
        )
    mean_oracle = record.get("oracle_mean_over_levels", "-")
    lines.append(
        f"| mean | {cell(m[COMPARED[0]]['mean_over_levels'])} | "
        f"{cell(m[COMPARED[1]]['mean_over_levels'])} | {cell(m[DIFFERENCE]['mean_over_levels'])} "
        f"| {mean_oracle} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
