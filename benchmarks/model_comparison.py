"""Each model's spectrum-averaged MAE and its excess over the Bayes oracle: the model comparison
study (`studies/configs/model_comparison.yaml`) run on the MOSI-size synthetic benchmark.

Every model (late fusion as the study's reference, QA-MoE, QA-MoE without its quality gate,
DERL, ProMMA, MulT) is trained on the continuous reliability spectrum (λ, η ~ U(0, 1) per
modality) with the same data, budget and seed, selected on its validation spectrum score and
evaluated once on test; the study logs the comparison to MLflow (`compare/...` on the study
run). This script runs that study and records, besides the table:

- ``quality_gate_delta``: QA-MoE's spectrum MAE minus that of QA-MoE without the quality gate,
  per split (negative: the gate helps);
- per model: epochs run, best epoch and the wall time of its run (training, validation each
  epoch, the finisher's test evaluation and figures).

    .venv/bin/python benchmarks/model_comparison.py [--root DIR] [--set key.path=value ...]

The MLflow store and Ray results go to ``--root`` (default ``.robustmsa/benchmarks/
model_comparison``, ignored by git); results to benchmarks/results/model_comparison.json, or
model_comparison_<preset>.json for another synthetic preset (``--set data.preset=temporal``).
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


def _runs(result) -> dict[str, dict]:
    """Per role: epochs run, best epoch and wall seconds of its child run."""
    from mlflow.tracking import MlflowClient
    from robustmsa.search.trial import ROLE_TAG

    client = MlflowClient(result.tracking_uri)
    children = client.search_runs(
        [result.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    out = {}
    for run in children:
        tags = run.data.tags
        out[tags[ROLE_TAG]] = {
            "model": tags.get("robustmsa.model"),
            "epochs_run": int(tags.get("robustmsa.epochs_run", -1)),
            "best_epoch": int(tags.get("robustmsa.best_epoch", -1)),
            "wall_s": round((run.info.end_time - run.info.start_time) / 1000, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(".robustmsa/benchmarks/model_comparison"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    from robustmsa.config import load
    from robustmsa.search.kinds.compare_models import format_comparison
    from robustmsa.search.study import run_study

    config = load(STUDY, args.overrides)
    args.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = run_study(config, root=args.root)
    wall = time.perf_counter() - started
    value = {(r.split, r.model, r.summary): r.value for r in result.rows}
    gate = {
        split: value[(split, "qa_moe", "spectrum_mae")]
        - value[(split, "qa_moe-no-quality-gate", "spectrum_mae")]
        for split in ("valid", "test")
        if (split, "qa_moe-no-quality-gate", "spectrum_mae") in value
    }
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "config": str(STUDY.relative_to(HERE.parent)),
        "overrides": args.overrides,
        "preset": config.data.preset,
        "epochs": config.training.epochs,
        "protocols": config.spectrum.protocols,
        "wall_s": round(wall, 1),
        "tracking_uri": result.tracking_uri,
        "parent_run_id": result.parent_run_id,
        "runs": _runs(result),
        "quality_gate_delta": gate,
        "table": [dataclasses.asdict(r) for r in result.rows],
    }
    preset = config.data.preset
    name = "model_comparison.json" if preset == "mosi" else f"model_comparison_{preset}.json"
    out = HERE / "results" / name
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(format_comparison(result.rows))
    print(f"QA-MoE minus QA-MoE without the quality gate (spectrum MAE): {gate}")
    for role, r in record["runs"].items():
        print(f"  {role:<24} epochs {r['epochs_run']:>3} best {r['best_epoch']:>3} {r['wall_s']} s")
    print(f"study wall {wall:.0f} s; written {out}")


if __name__ == "__main__":
    main()
