"""How close a learner that sees the oracle's own statistic gets to the oracle, as data grows.

On the ``mosi`` preset (no window, no cue) the frame mean of each modality is sufficient: the
exact oracle and the one that sees only frame means agree (`temporal_preset.py`). The oracle is
also given the generator's parameters (projections, noise levels, the label map); a learner must
estimate them. This script measures that estimation on clean inputs with two learners of the
sufficient statistic, both ridge regressions on the three modalities' frame means (768 + 5 + 20
= 793 features, centred with the training means), their penalty chosen on the validation split
from ``--alphas``, the test split reported once:

- ``ridge``: of the label itself;
- ``ridge_link``: of the label's normal score (``Phi^-1`` of its mid-rank among the training
  labels), mapped back through the training labels' quantiles (``y = q(Phi(s))``). The labels
  are a non-decreasing map of a Gaussian score (`robustmsa.data.synthetic.LabelMap`), so this
  learns that map from the training labels alone (nothing of the generator) and keeps the
  regression linear in the latent score; a monotone map keeps medians, so the L1-optimal
  decision is kept too.

Per training-set size (``--factors``: the preset with its training split that many times larger,
fresh samples from the same generator, `data_size.dataset`; validation and test are drawn again
too, so each row has its own oracle): each learner's test MAE, the oracle's, the relative
excess.

    .venv/bin/python benchmarks/learnability.py [--factors 1 4 16] [--root /tmp/learnability]

Results go to benchmarks/results/learnability_mosi.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from data_size import dataset

HERE = Path(__file__).resolve().parent


def frame_means(split) -> tuple[np.ndarray, np.ndarray, object]:
    """``(X (N, sum of dims), y (N,), batch)``: each modality's mean over its valid frames
    (zeros for an absent one), concatenated in `MODALITIES` order, and the labels."""
    from robustmsa.data.batch import MODALITIES

    batch = split.batch(list(range(len(split))))
    columns = []
    for m in MODALITIES:
        valid = (batch.masks[m] & batch.present[m][:, None]).to(torch.float64)  # (N, T)
        total = (batch.features[m].to(torch.float64) * valid[..., None]).sum(1)  # (N, d)
        columns.append(total / valid.sum(1).clamp_min(1.0)[:, None])
    return torch.cat(columns, 1).numpy(), batch.labels.to(torch.float64).numpy(), batch


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Weights of ``y - mean(y) ~ x w`` with penalty ``alpha ||w||^2`` (x centred)."""
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (y - y.mean()))


def normal_scores(y: np.ndarray) -> np.ndarray:
    """``Phi^-1((rank - 1/2) / N)`` of each label among ``y`` (ties share their mean rank)."""
    from scipy.stats import norm, rankdata

    return norm.ppf((rankdata(y) - 0.5) / len(y))


def quantile_link(train_labels: np.ndarray):
    """``s -> q(Phi(s))``: the training labels' ``Phi(s)``-quantile (a step function, the
    empirical counterpart of `LabelMap` ``quantile``)."""
    from scipy.stats import norm

    knots = np.sort(train_labels)

    def link(s: np.ndarray) -> np.ndarray:
        k = np.ceil(norm.cdf(s) * len(knots)).astype(int) - 1
        return knots[np.clip(k, 0, len(knots) - 1)]

    return link


def fit(x_train, target, x_valid, y_valid, alphas, decode) -> tuple[float, np.ndarray, dict]:
    """The penalty of least validation MAE (``decode(x w + mean)`` against ``y_valid``), its
    weights and every penalty's validation MAE."""
    valid_mae = {}
    for alpha in alphas:
        w = ridge(x_train, target, alpha)
        valid_mae[alpha] = float(np.abs(decode(x_valid @ w + target.mean()) - y_valid).mean())
    alpha = min(valid_mae, key=valid_mae.get)
    return alpha, ridge(x_train, target, alpha), valid_mae


def one_size(root: Path, factor: int, alphas: list[float]) -> dict:
    from robustmsa.data.oracle import Oracle
    from robustmsa.data.parquet import open_dataset

    data = dataset(root, "mosi", factor)
    splits = open_dataset(data, frame_cache=root / "frames")
    x_train, y_train, _ = frame_means(splits["train"])
    x_valid, y_valid, _ = frame_means(splits["valid"])
    x_test, y_test, test_batch = frame_means(splits["test"])
    centre = x_train.mean(0)
    x_train, x_valid, x_test = x_train - centre, x_valid - centre, x_test - centre
    oracle = Oracle.load(data).predict(test_batch).to(torch.float64).numpy()
    oracle_mae = float(np.abs(oracle - y_test).mean())
    learners = {
        "ridge": (y_train, lambda s: s),
        "ridge_link": (normal_scores(y_train), quantile_link(y_train)),
    }
    row = {"factor": factor, "train_samples": len(y_train), "oracle_test_mae": round(oracle_mae, 4)}
    for name, (target, decode) in learners.items():
        alpha, w, valid_mae = fit(x_train, target, x_valid, y_valid, alphas, decode)
        test_mae = float(np.abs(decode(x_test @ w + target.mean()) - y_test).mean())
        row[name] = {
            "alpha": alpha,
            "valid_mae_by_alpha": {str(a): round(v, 4) for a, v in valid_mae.items()},
            "test_mae": round(test_mae, 4),
            "relative_excess": round((test_mae - oracle_mae) / oracle_mae, 4),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[3, 10, 30, 100, 300, 1000, 3000]
    )
    parser.add_argument("--root", type=Path, default=Path("/tmp/learnability"))
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    rows = []
    for factor in args.factors:
        rows.append(one_size(args.root, factor, args.alphas))
        r = rows[-1]
        print(
            f"x{factor}: {r['train_samples']} training samples, oracle {r['oracle_test_mae']:.4f}"
            + "".join(
                f"; {name} (alpha {r[name]['alpha']:g}) {r[name]['test_mae']:.4f} "
                f"({100 * r[name]['relative_excess']:.1f} %)"
                for name in ("ridge", "ridge_link")
            ),
            flush=True,
        )
    out = HERE / "results" / "learnability_mosi.json"
    result = {"date": time.strftime("%Y-%m-%d"), "inputs": "clean test split", "rows": rows}
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
