"""Evaluate a model across spectrum points of one split, in long form.

Each clean batch is read once and its random numbers drawn once (`spectrum.draw`); every point
then costs one corruption (arithmetic) and one forward pass, so a sweep costs about
(points x one clean pass). `SpectrumEvaluator` keeps the batches and draws of a split in
memory when they fit a budget, so evaluating every epoch re-reads and re-draws nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from robustmsa.data.batch import Batch
from robustmsa.data.parquet import ParquetSplit
from robustmsa.evaluation.metrics import regression_metrics
from robustmsa.models.base import MSAModel
from robustmsa.spectrum import Draws, EvalPoint, apply_point, draw

ROW_FIELDS = ("protocol", "modalities", "level", "metric", "value", "n")
STREAM_KEY = "eval"  # every point of every protocol shares the per-sample random numbers
CACHE_BUDGET_BYTES = 512 * 2**20


class SpectrumEvaluator:
    """The points of ``points`` on ``split``, ready to evaluate any number of models.

    Corruption of sample ``i`` depends only on (dataset digest, its id, seed, point), so the
    table is the same for every batch size, order and worker count.
    """

    def __init__(
        self,
        split: ParquetSplit,
        points: list[EvalPoint],
        *,
        seed: int,
        batch_size: int = 128,
        cache: bool | None = None,
    ):
        self.split, self.points, self.seed, self.batch_size = split, points, seed, batch_size
        self._modalities = sorted(
            {m for p in points for m, (lam, eta) in p.point if (lam or eta) and eta < 1.0}
        )
        if cache is None:
            cache = self._estimated_bytes() <= CACHE_BUDGET_BYTES
        self._cached = list(self._prepare()) if cache else None

    def _estimated_bytes(self) -> int:
        total = 0
        for m, d in self.split.meta.dims.items():
            frames = self.split.frames[m].num_frames
            total += frames * d * 4 * (2 if m in self._modalities else 1)
        return total

    def _prepare(self) -> Iterator[tuple[Batch, Draws]]:
        digest = self.split.meta.digest
        for clean in self.split.batches(self.batch_size):
            draws = draw(
                clean, self._modalities, seed=self.seed, stream_key=STREAM_KEY, digest=digest
            )
            yield clean, draws

    @torch.no_grad()
    def predict(self, model: MSAModel, device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
        """Predictions ``(N,)`` of ``model`` at every point, keyed by ``point.key``."""
        was_training = model.training
        model.eval()
        digest = self.split.meta.digest
        preds: dict[str, list[np.ndarray]] = {p.key: [] for p in self.points}
        try:
            for clean, draws in self._cached or self._prepare():
                for p in self.points:
                    batch = apply_point(
                        clean,
                        p.point,
                        seed=self.seed,
                        stream_key=STREAM_KEY,
                        digest=digest,
                        draws=draws,
                    )
                    out = model(batch.to(device))
                    preds[p.key].append(out.prediction.float().cpu().numpy())
        finally:
            model.train(was_training)
        return {k: np.concatenate(v) for k, v in preds.items()}

    def evaluate(self, model: MSAModel, device: torch.device | str = "cpu") -> list[dict]:
        """Long-form rows ``(protocol, modalities, level, metric, value, n)``."""
        preds = self.predict(model, device)
        labels = self.split.labels.numpy()
        rows = []
        for p in self.points:
            for metric, value in regression_metrics(preds[p.key], labels).items():
                rows.append(
                    {
                        "protocol": p.protocol,
                        "modalities": p.modalities,
                        "level": float(p.level),
                        "metric": metric,
                        "value": float(value),
                        "n": len(labels),
                    }
                )
        return rows


def evaluate_spectrum(
    model: MSAModel,
    split: ParquetSplit,
    points: list[EvalPoint],
    *,
    seed: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """One-shot evaluation: long-form rows, one per point x metric."""
    evaluator = SpectrumEvaluator(split, points, seed=seed, batch_size=batch_size, cache=False)
    return evaluator.evaluate(model, device)
