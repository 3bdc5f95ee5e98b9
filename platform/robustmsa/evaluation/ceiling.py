"""The ceiling: the exact Bayes oracle scored on the same spectrum points as a model.

`oracle_rows(evaluator)` runs the oracle of a synthetic dataset (`robustmsa.data.oracle`)
through the very `SpectrumEvaluator` that scores the models, so it sees the identical corrupted
inputs (same clean batches, same random draws, same points) and returns the same long-form
rows; the difference between a model's table and the oracle's is then a paired comparison.
A dataset without a generator (imported real data) has no oracle, and gets None.

The rows depend only on the dataset (its digest), the split, the points and the evaluation
seed, never on a model, so every trial of a study gets the same ceiling: a process keeps the
last few tables (`ORACLE_MEMO_SIZE`) and hands out copies. A Ray worker that finishes several
trials computes each table once (about 33 s for a trial's 218 test points at MOSI size).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from robustmsa.data.batch import Batch
from robustmsa.data.oracle import Oracle
from robustmsa.data.synthetic import GENERATOR_FILE
from robustmsa.evaluation.spectrum import DECISION_PREFIX, SpectrumEvaluator
from robustmsa.models.base import ModelOutput, MSAModel

ORACLE_MEMO_SIZE = 8  # tables kept per process (a study uses two: valid and test)
_MEMO: OrderedDict[tuple, list[dict]] = OrderedDict()


class OracleModel(MSAModel):
    """The oracle behind the model contract: ``model(batch).prediction`` is the oracle's
    posterior median of the label, float32 ``(B,)``; its extras ``decision/<metric>`` are the
    Bayes decisions of the accuracies (`Oracle.decisions`), which the evaluator scores those
    metrics on (`robustmsa.evaluation.spectrum.DECISION_PREFIX`).

    It has no parameters; ``eval``/``train`` change nothing it computes. It reads
    ``batch.reliability`` (the noise level λ of each modality), which `apply_point` sets on
    every corrupted batch; on a batch without it the oracle treats every modality as noise-free.
    """

    def __init__(self, oracle: Oracle):
        super().__init__()
        self.oracle = oracle

    def forward(self, batch: Batch) -> ModelOutput:
        median, decided = self.oracle.decisions(batch)
        extras = {DECISION_PREFIX + metric: value for metric, value in decided.items()}
        return ModelOutput(prediction=median, extras=extras)


def oracle_rows(
    evaluator: SpectrumEvaluator, device: torch.device | str = "cpu"
) -> list[dict] | None:
    """The oracle's long-form rows on ``evaluator``'s split and points, or None when the split's
    dataset directory has no generator file (not synthetic). Computed once per process for
    each (dataset digest, split, points, seed, device); the caller gets its own copy of the
    rows."""
    root = evaluator.split.path.parent
    if not (root / GENERATOR_FILE).is_file():
        return None
    key = (
        str(evaluator.split.path.resolve()),
        evaluator.split.meta.digest,
        tuple(p.key for p in evaluator.points),
        evaluator.seed,
        len(evaluator.order),  # a shard's table is refused by `table`; never shared with it
        str(device),  # float64 either way, but another device may round differently
    )
    rows = _MEMO.get(key)
    if rows is None:
        rows = evaluator.evaluate(OracleModel(Oracle.load(root)), device)
        _MEMO[key] = rows
        while len(_MEMO) > ORACLE_MEMO_SIZE:
            _MEMO.popitem(last=False)
    _MEMO.move_to_end(key)
    return [dict(r) for r in rows]
