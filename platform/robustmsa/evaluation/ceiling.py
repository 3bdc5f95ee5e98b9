"""The ceiling: the exact Bayes oracle scored on the same spectrum points as a model.

`oracle_rows(evaluator)` runs the oracle of a synthetic dataset (`robustmsa.data.oracle`)
through the very `SpectrumEvaluator` that scores the models, so it sees the identical corrupted
inputs (same clean batches, same random draws, same points) and returns the same long-form
rows; the difference between a model's table and the oracle's is then a paired comparison.
A dataset without a generator (imported real data) has no oracle, and gets None.
"""

from __future__ import annotations

import torch

from robustmsa.data.batch import Batch
from robustmsa.data.oracle import Oracle
from robustmsa.data.synthetic import GENERATOR_FILE
from robustmsa.evaluation.spectrum import SpectrumEvaluator
from robustmsa.models.base import ModelOutput, MSAModel


class OracleModel(MSAModel):
    """The oracle behind the model contract: ``model(batch).prediction`` is the oracle's
    posterior median of the label, float32 ``(B,)``.

    It has no parameters; ``eval``/``train`` change nothing it computes. It reads
    ``batch.reliability`` (the noise level λ of each modality), which `apply_point` sets on
    every corrupted batch; on a batch without it the oracle treats every modality as noise-free.
    """

    def __init__(self, oracle: Oracle):
        super().__init__()
        self.oracle = oracle

    def forward(self, batch: Batch) -> ModelOutput:
        return ModelOutput(prediction=self.oracle.predict(batch))


def oracle_rows(
    evaluator: SpectrumEvaluator, device: torch.device | str = "cpu"
) -> list[dict] | None:
    """The oracle's long-form rows on ``evaluator``'s split and points, or None when the split's
    dataset directory has no generator file (not synthetic)."""
    root = evaluator.split.path.parent
    if not (root / GENERATOR_FILE).is_file():
        return None
    return evaluator.evaluate(OracleModel(Oracle.load(root)), device)
