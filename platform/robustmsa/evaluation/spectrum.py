"""Evaluate a model across spectrum points of one split, in long form.

Each clean batch is read once, its random numbers drawn once (`spectrum.draw`) and the
per-sample rates of the ``random`` protocol drawn once (`EvalPoint.resolve`); every point then
costs one corruption (arithmetic) and one forward pass, so a sweep costs about
(points x one clean pass). Points whose corrupted batch is identical (every level-0 point and
``clean``; ``missing@text`` at 1.0 and the pattern ``audio+vision``) share one forward pass.
`SpectrumEvaluator` keeps the batches and draws of a split in
memory when they fit a budget, so evaluating every epoch re-reads and re-draws nothing;
`evaluate_spectrum` is the one-shot API returning a DataFrame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.data.frame_cache import progress_bar
from robustmsa.data.parquet import ParquetSplit, open_dataset
from robustmsa.evaluation.metrics import regression_metrics
from robustmsa.models.base import MSAModel
from robustmsa.spectrum import Draws, EvalPoint, apply_point, build_points, draw

ROW_FIELDS = ("protocol", "modalities", "level", "metric", "value", "n")
STREAM_KEY = "eval"  # every point of every protocol shares the per-sample random numbers
CACHE_BUDGET_BYTES = 512 * 2**20


@dataclass
class Prepared:
    """One clean batch and what every point of a sweep shares for it.

    ``rows``: int64 ``(B,)``, the batch's row indices in the split; ``rates``: per random-draw
    point key, the per-sample point (`EvalPoint.resolve`: float32 ``(B,)`` λ and η per
    modality)."""

    rows: np.ndarray
    clean: Batch
    draws: Draws
    rates: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]

    def to(self, device: torch.device | str) -> Prepared:
        """The batch and its draws on ``device``, moved once per batch so that every point
        corrupts there. The rates stay on the CPU, where `apply_point` validates them."""

        def move(value: object) -> object:
            # Draws holds tensors, per-modality dicts of tensors, and None.
            if isinstance(value, torch.Tensor):
                return value.to(device)
            if isinstance(value, dict):
                return {m: move(t) for m, t in value.items()}
            return value

        moved = {f.name: move(getattr(self.draws, f.name)) for f in fields(self.draws)}
        return Prepared(self.rows, self.clean.to(device), Draws(**moved), self.rates)


# A model's extras under this prefix are its predictions for one metric alone (the oracle's
# Bayes decisions, `robustmsa.evaluation.ceiling`); stored beside the point's key after "#".
DECISION_PREFIX = "decision/"
DECISION_SEPARATOR = "#"


def _input_key(point: EvalPoint) -> object:
    """Equal for two points exactly when `apply_point` gives them the same batch (features,
    masks, presence and reliability): the ``(λ, η)`` of every modality, clean when unlisted.
    A random draw has per-sample rates of its own."""
    if point.random_draw is not None:
        return point.key
    pairs = point.as_dict()
    return tuple(pairs.get(m, (0.0, 0.0)) for m in MODALITIES)


def _check_order(order: Sequence[int] | np.ndarray | None, n: int) -> np.ndarray:
    if order is None:
        return np.arange(n)
    arr = np.asarray(order)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or not np.array_equal(np.sort(arr), range(n)):
        raise ValueError(f"order must be a permutation of the split's {n} rows, got {order!r}")
    return arr.astype(np.int64)


def _check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    rank, world = shard
    if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
        raise ValueError(
            f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}"
        )
    return rank, world


class SpectrumEvaluator:
    """The points of ``points`` on ``split``, ready to evaluate any number of models.

    Corruption of sample ``i`` depends only on (dataset digest, its id, seed, point), so the
    table is the same for every batch size, ``order`` (a permutation of the split's rows: the
    order in which batches are formed) and worker count. Predictions and rows always follow
    the split's row order.
    """

    def __init__(
        self,
        split: ParquetSplit,
        points: list[EvalPoint],
        *,
        seed: int,
        batch_size: int = 128,
        cache: bool | None = None,
        order: Sequence[int] | np.ndarray | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        keys = [p.key for p in points]
        if len(set(keys)) != len(keys):
            repeated = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"points repeat keys: {repeated}")
        self.split, self.points, self.seed, self.batch_size = split, points, seed, batch_size
        rank, world = _check_shard(shard)
        # A Ray Train worker predicts every world-th row of the order; `gather_predictions`
        # merges the shards, so the table does not depend on the worker count.
        self.order = _check_order(order, len(split))[rank::world]
        self._modalities = sorted({m for p in points for m in p.drawn_modalities})
        self._random = [p for p in points if p.random_draw is not None]
        self._same_input: dict[object, list[EvalPoint]] = {}
        for p in points:
            self._same_input.setdefault(_input_key(p), []).append(p)
        if cache is None:
            cache = self._estimated_bytes() <= CACHE_BUDGET_BYTES
        self._cached = list(self._prepare()) if cache else None

    def _estimated_bytes(self) -> int:
        total = 0
        for m, d in self.split.meta.dims.items():
            frames = self.split.frames[m].num_frames
            # A drawn modality holds its padded features, the compact normals and the padded
            # normals (padding adds about a third over the valid frames): about 4x the frames.
            total += frames * d * 4 * (4 if m in self._modalities else 1)
        return total

    def _prepare(self) -> Iterator[Prepared]:
        digest = self.split.meta.digest
        for start in range(0, len(self.order), self.batch_size):
            rows = self.order[start : start + self.batch_size]
            clean = self.split.batch(rows)
            draws = draw(
                clean, self._modalities, seed=self.seed, stream_key=STREAM_KEY, digest=digest
            )
            rates = {
                p.key: p.resolve(clean.ids, digest=digest, seed=self.seed) for p in self._random
            }
            yield Prepared(rows, clean, draws, rates)

    @torch.no_grad()
    def predict(
        self, model: MSAModel, device: torch.device | str = "cpu", progress: bool | str = False
    ) -> dict[str, np.ndarray]:
        """Predictions ``(N,)`` of ``model`` at every point in split row order, keyed by
        ``point.key``; a model's extras ``decision/<metric>`` (the oracle's Bayes decisions)
        under ``point.key + "#" + metric``, and `table` scores that metric on them.
        ``progress``: a bar over the points of every batch (True, or its label;
        `robustmsa.data.frame_cache.progress_bar`, tqdm_ray inside a Ray worker)."""
        was_training = model.training
        model.eval()
        digest = self.split.meta.digest
        preds = {p.key: np.full(len(self.split), np.nan, np.float32) for p in self.points}
        batches = -(-len(self.order) // self.batch_size)
        label = progress if isinstance(progress, str) else "spectrum"
        desc = f"{label} ({len(self.points)} points x {batches} batches)"
        bar = progress_bar(len(self.points) * batches, desc, bool(progress), unit="point")
        try:
            for prepared in self._cached or self._prepare():
                prepared = prepared.to(device)
                for p, *same in self._same_input.values():
                    batch = apply_point(
                        prepared.clean,
                        prepared.rates.get(p.key, p.point),
                        seed=self.seed,
                        stream_key=STREAM_KEY,
                        digest=digest,
                        draws=prepared.draws,
                    )
                    out = model(batch)
                    values = {"": out.prediction} | {
                        DECISION_SEPARATOR + k.removeprefix(DECISION_PREFIX): v
                        for k, v in out.extras.items()
                        if k.startswith(DECISION_PREFIX)
                    }
                    for suffix, value in values.items():
                        array = value.float().cpu().numpy()
                        for q in (p, *same):
                            if q.key + suffix not in preds:
                                preds[q.key + suffix] = np.full(len(self.split), np.nan, np.float32)
                            preds[q.key + suffix][prepared.rows] = array
                    bar.update(1 + len(same))
        finally:
            bar.close()
            model.train(was_training)
        return preds

    def evaluate(
        self, model: MSAModel, device: torch.device | str = "cpu", progress: bool | str = False
    ) -> list[dict]:
        """Long-form rows ``(protocol, modalities, level, metric, value, n)``, in point order.
        ``progress``: a progress bar (`predict`); off by default, as in every epoch's
        validation."""
        return self.table(self.predict(model, device, progress))

    def table(self, preds: Mapping[str, np.ndarray]) -> list[dict]:
        """Long-form rows from predictions of every row at every point (`predict`, merged
        across shards by `merge_predictions`)."""
        missing = [k for k, v in preds.items() if np.isnan(v).any()]
        if missing:
            raise ValueError(f"predictions missing for some rows at {missing[:3]} (a shard only?)")
        labels = self.split.labels.numpy()
        rows = []
        for p in self.points:
            values = regression_metrics(preds[p.key], labels)
            for metric in values:  # a metric the model decided apart is scored on its decision
                decided = preds.get(p.key + DECISION_SEPARATOR + metric)
                if decided is not None:
                    values[metric] = regression_metrics(decided, labels)[metric]
            for metric, value in values.items():
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


def merge_predictions(shards: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The predictions of every row from the workers' shares (`SpectrumEvaluator` ``shard``):
    each row is taken from the one share that predicted it (the others hold NaN there)."""
    merged = {}
    for key in shards[0]:
        out = shards[0][key].copy()
        for share in shards[1:]:
            fill = np.isnan(out)
            out[fill] = share[key][fill]
        merged[key] = out
    return merged


def evaluate_spectrum(
    model: MSAModel,
    dataset: str | os.PathLike | Mapping[str, ParquetSplit],
    split: str,
    protocols: str | Sequence[str],
    *,
    seed: int = 0,
    levels: Sequence[float] | None = None,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    order: Sequence[int] | np.ndarray | None = None,
    progress: bool | str = False,
) -> pd.DataFrame:
    """One-shot evaluation of ``model`` on ``split`` of ``dataset`` at the points of
    ``protocols`` (names as in `build_points`, e.g. ``["clean", "missing@all", "patterns"]``).

    ``dataset`` is a dataset directory or the dict `open_dataset` returns; ``split`` one of its
    split names ("valid", "test"). ``levels`` are the curve levels (default 0.0..1.0 step 0.1),
    ``seed`` the evaluation seed of the corruption, ``order`` an optional permutation of the
    split's rows (the table does not depend on it), ``progress`` a progress bar (True, or its
    label). Batches are streamed, not cached: each is read and drawn once, then corrupted and
    forwarded once per point.

    Returns a DataFrame with columns ``protocol, modalities, level, metric, value, n``, one row
    per point x metric, in point order.
    """
    splits = open_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    if not isinstance(splits, Mapping):
        raise ValueError(f"dataset must be a directory or open_dataset's dict, got {dataset!r}")
    if split not in splits:
        raise ValueError(f"split {split!r} unknown (dataset has: {sorted(splits)})")
    points = build_points(protocols, levels)
    evaluator = SpectrumEvaluator(
        splits[split], points, seed=seed, batch_size=batch_size, cache=False, order=order
    )
    rows = evaluator.evaluate(model, device, progress)
    return pd.DataFrame(rows, columns=list(ROW_FIELDS))
