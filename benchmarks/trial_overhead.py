"""Fixed per-trial overhead: a one-epoch trial through a TorchTrainer versus in-process.

Runs two embedded studies of the same one-epoch trials (tiny synthetic data, one trial at a
time, so wall time / trials is the per-trial cost), one per backend, in one process and one
local Ray, and reports the ratio. The default backend (`training.backend: auto`) follows it.

    .venv/bin/python benchmarks/trial_overhead.py [--trials 3]

Results are written to benchmarks/results/trial_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STUDY_YAML = HERE.parent / "studies" / "configs" / "qa_moe_search.yaml"


def per_trial_seconds(backend: str, trials: int, root: Path) -> float:
    from robustmsa.config import load
    from robustmsa.search.study import run_study

    config = load(
        STUDY_YAML,
        [
            "data.preset=tiny",
            f"data.cache_dir={root / 'data'}",
            "training.epochs=1",  # a study trains at least one epoch
            f"training.backend={backend}",
            f"search.num_samples={trials}",
            "study.max_concurrent=1",
        ],
    )
    started = time.perf_counter()
    result = run_study(config, root=root / backend)
    wall = time.perf_counter() - started
    assert len(result.trials) == trials and all(not t.error for t in result.trials)
    return wall / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Warm-up: synthetic data generation and first imports are not per-trial costs.
        per_trial_seconds("in_process", 1, root / "warmup")
        in_process = per_trial_seconds("in_process", args.trials, root)
        torch_trainer = per_trial_seconds("torch_trainer", args.trials, root)
    ray.shutdown()
    result = {
        "trials_per_backend": args.trials,
        "in_process_s_per_trial": round(in_process, 2),
        "torch_trainer_s_per_trial": round(torch_trainer, 2),
        "ratio_torch_trainer_over_in_process": round(torch_trainer / in_process, 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "trial_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
