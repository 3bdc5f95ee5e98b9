"""Where a trained model loses to the Bayes oracle: its excess MAE point by point and protocol by
protocol.

The spectrum score (`robustmsa.evaluation.summaries.spectrum_score`) is the mean over protocols
of each protocol's mean curve (or point) MAE, linear in the points' MAEs, so a model's excess
over the oracle splits exactly into one share per protocol: ``excess = mean over protocols of
(model's protocol mean - oracle's protocol mean)``. This script re-evaluates the checkpoint that
a finished trial logged to MLflow (`robustmsa.evaluation.logged`, as ``robustmsa evaluate``
does) and the synthetic dataset's oracle (`robustmsa.evaluation.ceiling.oracle_rows`) on the same
corrupted inputs (the same split, points and evaluation seed), and reports:

- per protocol: the model's and the oracle's mean MAE, the excess, its share of the total;
- per point (protocol, modalities, level): both MAEs and the excess.

    .venv/bin/python benchmarks/oracle_gap.py --tracking-uri sqlite:///DIR/mlruns.db \\
        --run-id RUN [--run-id RUN ...] [--split test] [--name NAME]

RUN: trial runs (a comparison's child or a confirm study's per-seed run) of one synthetic
dataset. Results go to benchmarks/results/oracle_gap_<name>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def protocol_means(rows: list[dict]) -> dict[str, float]:
    """``{protocol: the protocol's share of spectrum_score before the mean over protocols}``."""
    from robustmsa.evaluation.summaries import spectrum_score

    by_protocol: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_protocol[r["protocol"]].append(r)
    return {p: spectrum_score(rs) for p, rs in sorted(by_protocol.items())}


def mae_points(rows: list[dict]) -> dict[tuple[str, str, float], float]:
    return {
        (r["protocol"], r["modalities"], round(float(r["level"]), 4)): float(r["value"])
        for r in rows
        if r["metric"] == "mae"
    }


def gap(client, run_id: str, split: str) -> dict:
    """Model and oracle on ``split`` at the run's validation protocols, compared."""
    from robustmsa.evaluation.ceiling import oracle_rows
    from robustmsa.evaluation.logged import load_logged, split_evaluator
    from robustmsa.evaluation.summaries import spectrum_score

    trained = load_logged(client, run_id)
    evaluator = split_evaluator(trained, split)
    model = evaluator.evaluate(trained.model, "cpu")
    oracle = oracle_rows(evaluator)
    if oracle is None:
        raise SystemExit(f"run {run_id}: its dataset has no oracle (not synthetic)")
    model_score, oracle_score = spectrum_score(model), spectrum_score(oracle)
    excess = model_score - oracle_score
    mp, op = protocol_means(model), protocol_means(oracle)
    n = len(mp)
    protocols = {
        p: {
            "model": round(mp[p], 4),
            "oracle": round(op[p], 4),
            "excess": round(mp[p] - op[p], 4),
            "share_of_excess": round((mp[p] - op[p]) / n / excess, 3),
        }
        for p in mp
    }
    m_pts, o_pts = mae_points(model), mae_points(oracle)
    points = [
        {
            "protocol": k[0],
            "modalities": k[1],
            "level": k[2],
            "model": round(m_pts[k], 4),
            "oracle": round(o_pts[k], 4),
            "excess": round(m_pts[k] - o_pts[k], 4),
        }
        for k in sorted(m_pts)
    ]
    return {
        "run_id": run_id,
        "model": trained.config.model.name,
        "preset": trained.config.data.preset,
        "split": split,
        "spectrum_score": {"model": round(model_score, 4), "oracle": round(oracle_score, 4)},
        "excess": round(excess, 4),
        "relative_excess": round(excess / oracle_score, 4),
        "protocols": protocols,
        "points": points,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--run-id", action="append", required=True)
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--name", default="run")
    args = parser.parse_args()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    results = [gap(client, run_id, args.split) for run_id in args.run_id]
    out = HERE / "results" / f"oracle_gap_{args.name}.json"
    out.write_text(
        json.dumps({"date": time.strftime("%Y-%m-%d"), "runs": results}, indent=2) + "\n"
    )
    for r in results:
        print(
            f"\n{r['model']} ({r['run_id'][:8]}, {r['preset']}, {r['split']}): spectrum score "
            f"{r['spectrum_score']['model']:.3f} vs oracle {r['spectrum_score']['oracle']:.3f}, "
            f"excess {r['excess']:.3f} ({100 * r['relative_excess']:.0f} %)"
        )
        print(f"  {'protocol':<10} {'model':>7} {'oracle':>7} {'excess':>7} {'share':>6}")
        for p, v in r["protocols"].items():
            print(
                f"  {p:<10} {v['model']:>7.3f} {v['oracle']:>7.3f} {v['excess']:>7.3f} "
                f"{100 * v['share_of_excess']:>5.0f}%"
            )
        print(f"  {'point':<34} {'model':>7} {'oracle':>7} {'excess':>7}")
        for pt in r["points"]:
            name = f"{pt['protocol']}/{pt['modalities']}@{pt['level']:.2f}"
            print(f"  {name:<34} {pt['model']:>7.3f} {pt['oracle']:>7.3f} {pt['excess']:>7.3f}")


if __name__ == "__main__":
    main()
