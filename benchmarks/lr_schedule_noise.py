"""How much a trial's validation score moves between its last epochs, per learning-rate schedule.

The P5 benchmark (search_efficiency.py) found the default QA-MoE study's objective noisy: a
trial's validation spectrum score moves by about 0.03-0.04 between successive late epochs, as
much as the spread between good configurations. This measures that noise, paired, under
``training.lr_schedule: constant`` and ``cosine``:

- ``--configs`` points drawn from the default study's search space
  (studies/configs/qa_moe_search.yaml) by Optuna's random sampler (seed ``--seed``);
- each trained in-process with both schedules, the study's data, epochs and seed, and
  ``patience`` set to the epoch count so every run has the whole trajectory;
- per run: the mean absolute change of the validation spectrum score between successive
  epochs from ``--from-epoch`` on, the best score, and the last epoch's score.

Reported per schedule: mean and median of those over the configurations, and the paired
difference cosine minus constant with a 95 % t interval.

    .venv/bin/python benchmarks/lr_schedule_noise.py [--configs 8] [--seed 0] [--from-epoch 5]

Results go to benchmarks/results/lr_schedule_noise.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
STUDY = HERE.parent / "studies" / "configs" / "qa_moe_search.yaml"
SCHEDULES = ("constant", "cosine")
SCORE = "val/spectrum_score"


def sample_points(n: int, seed: int) -> list[dict]:
    """``n`` points of the study's space, as ``{config key path: value}``."""
    import optuna
    from robustmsa.config import load
    from robustmsa.search.space import suggest

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load(STUDY).kind_section.space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points = []
    for _ in range(n):
        trial = study.ask()
        suggest(trial, space)
        points.append(dict(trial.params))
    return points


def trajectory(point: dict, schedule: str) -> list[float]:
    """The validation spectrum score of every epoch of one in-process run."""
    from robustmsa.config import load
    from robustmsa.training.loop import run_training
    from robustmsa.training.reporting import LocalReporter

    base = load(STUDY)
    overrides = [f"{k}={v}" for k, v in point.items()]
    overrides += [
        f"training.lr_schedule={schedule}",
        f"training.patience={base.training.epochs}",
    ]
    reporter = LocalReporter()
    run_training(load(STUDY, overrides), reporter)
    return [h[SCORE] for h in reporter.history if h["epoch"] >= 1]


def summary(scores: list[float], from_epoch: int) -> dict:
    late = scores[from_epoch - 1 :]
    steps = [abs(b - a) for a, b in itertools.pairwise(late)]
    return {"late_change": statistics.mean(steps), "best": min(scores), "last": scores[-1]}


def paired_interval(values: list[float]) -> dict:
    """Mean, sample standard deviation and 95 % t interval (the confirm study's `interval`)."""
    from robustmsa.search.kinds.confirm import interval

    mean, std, low, high = interval(values)
    return {"mean": mean, "std": std, "ci_low": low, "ci_high": high, "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-epoch", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lr_schedule_noise.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    runs = []
    for i, point in enumerate(sample_points(args.configs, args.seed)):
        row = {"point": point}
        for schedule in SCHEDULES:
            scores = trajectory(point, schedule)
            row[schedule] = {"scores": scores, **summary(scores, args.from_epoch)}
        runs.append(row)
        print(
            f"config {i}: "
            + ", ".join(
                f"{s} change {row[s]['late_change']:.4f} best {row[s]['best']:.4f}"
                for s in SCHEDULES
            ),
            flush=True,
        )
    per_schedule = {
        s: {
            k: {
                "mean": statistics.mean(r[s][k] for r in runs),
                "median": statistics.median(r[s][k] for r in runs),
            }
            for k in ("late_change", "best", "last")
        }
        for s in SCHEDULES
    }
    paired = {
        k: paired_interval([r["cosine"][k] - r["constant"][k] for r in runs])
        for k in ("late_change", "best", "last")
    }
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "config": str(STUDY.relative_to(HERE.parent)),
        "configs": args.configs,
        "seed": args.seed,
        "from_epoch": args.from_epoch,
        "per_schedule": per_schedule,
        "cosine_minus_constant": paired,
        "runs": runs,
        "wall_s": round(time.time() - started, 1),
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"per_schedule": per_schedule, "cosine_minus_constant": paired}, indent=1))


if __name__ == "__main__":
    main()
