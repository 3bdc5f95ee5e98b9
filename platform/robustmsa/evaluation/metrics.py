"""Sentiment metrics and robustness-curve summaries (numpy only).

Every definition follows docs/references.md, section "Metrics": the MMSA toolkit's
``MetricsTop`` (``__eval_mosi_regression`` and ``__eval_sims_regression``) and the AUILC of
EMT-DLFR; effective robustness is MultiBench's.

- :func:`regression_metrics`: MOSI / MOSEI labels in [-3, 3] (MMSA).
- :func:`sims_metrics`: CH-SIMS labels in [-1, 1] (MMSA).
- :func:`auilc`: EMT-DLFR's area under the indicator-vs-missing-rate curve (trapezoid,
  not divided by the range width).
- :func:`mean_over_curve`: the same area divided by the range width.
- :func:`effective_robustness`: MultiBench's effective robustness against a late-fusion curve.

Differences from MMSA that do not change any value: results are plain Python floats and are not
rounded to 4 decimals; MAE and Pearson correlation are computed in float64.

This module must import neither torch, ray nor mlflow (see ``robustmsa/__init__.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "LOWER_IS_BETTER",
    "auilc",
    "effective_robustness",
    "mean_over_curve",
    "regression_metrics",
    "sims_metrics",
    "weighted_f1",
]

# CH-SIMS class edges; class k is the half-open interval (edges[k], edges[k + 1]] (MMSA).
SIMS_EDGES_2 = (-1.01, 0.0, 1.01)
SIMS_EDGES_3 = (-1.01, -0.1, 0.1, 1.01)
SIMS_EDGES_5 = (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)

# The metric directions, defined once: these keys of `regression_metrics` / `sims_metrics` are
# errors (lower is better); every other key is a score (higher is better).
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae"})


# --------------------------------------------------------------------------- validation


def _as_float_1d(x: object, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D floating array, keeping a float16/32/64 dtype (else float64)."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nested lists and the like
        raise ValueError(f"{name} is not array-like: {exc}") from exc
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr


def _pair(pred: object, label: object) -> tuple[np.ndarray, np.ndarray]:
    p = _as_float_1d(pred, "pred")
    t = _as_float_1d(label, "label")
    if p.ndim != 1 or t.ndim != 1 or p.shape != t.shape:
        raise ValueError(
            "pred and label must be 1-D arrays of equal length, got shapes "
            f"pred {p.shape} and label {t.shape}"
        )
    if p.size == 0:
        raise ValueError("pred and label are empty; metrics need at least one sample")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise ValueError("pred and label must be finite (found nan or inf)")
    return p, t


def _curve(values: object, name: str) -> np.ndarray:
    arr = _as_float_1d(values, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr.astype(np.float64)


def _check_step(step: float) -> float:
    step = float(step)
    if not (math.isfinite(step) and step > 0):
        raise ValueError(f"step must be a finite positive number, got {step!r}")
    return step


# --------------------------------------------------------------------------- building blocks


def weighted_f1(true: object, pred: object) -> float:
    """Support-weighted F1 over the classes present in ``true`` or ``pred``.

    Same semantics as ``sklearn.metrics.f1_score(true, pred, average="weighted")`` with the TRUE
    labels first (docs/references.md; MMSA): per class ``F1 = 2 TP / (2 TP + FP + FN)``, which is
    ``2 P R / (P + R)`` and is 0 when ``P + R = 0`` (sklearn's zero-division value); the class
    F1 scores are averaged with weights equal to their number of TRUE samples, so a class that
    only occurs among the predictions has weight 0 (its false positives still lower the recall
    of the true classes they were taken from). Used by the public metrics; exposed for tests.
    """
    y = np.asarray(true).ravel()
    yhat = np.asarray(pred).ravel()
    if y.shape != yhat.shape:
        raise ValueError(f"true and pred must have equal length, got {y.shape} and {yhat.shape}")
    if y.size == 0:
        raise ValueError("weighted F1 needs at least one sample")
    total = 0.0
    for c in np.union1d(y, yhat):
        is_t = y == c
        is_p = yhat == c
        support = int(np.count_nonzero(is_t))
        if support == 0:
            continue  # weight 0
        tp = int(np.count_nonzero(is_t & is_p))
        fp = int(np.count_nonzero(is_p)) - tp
        fn = support - tp
        f1 = 2.0 * tp / (2.0 * tp + fp + fn) if tp else 0.0
        total += f1 * support
    return float(total / y.size)


def _accuracy(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


# A side whose values span less than this times max(1, max |x|) is constant: the spread of a
# model's predictions with every modality absent is float rounding (a few float32 ULPs, which
# change with the batch size), and a correlation of rounding noise is not a measurement.
CONSTANT_SPREAD = 1e-5


def is_constant(x: np.ndarray) -> bool:
    """Whether ``x`` is constant up to float rounding (`CONSTANT_SPREAD`); one value is."""
    return float(np.ptp(x)) <= CONSTANT_SPREAD * max(1.0, float(np.max(np.abs(x))))


def _pearson(p: np.ndarray, t: np.ndarray) -> float:
    """Pearson r in float64; 0.0 where either side is constant up to rounding (`is_constant`;
    MMSA's np.corrcoef gives nan for exactly constant values and noise for nearly constant
    ones)."""
    if is_constant(p) or is_constant(t):
        return 0.0
    r = np.corrcoef(p.astype(np.float64), t.astype(np.float64))[0, 1]
    return float(np.clip(r, -1.0, 1.0))


def _bin(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Class k where ``edges[k] < x <= edges[k + 1]`` (MMSA's loop), compared in x's dtype."""
    e = np.asarray(edges, dtype=x.dtype)
    return np.digitize(x, e, right=True) - 1


# --------------------------------------------------------------------------- public metrics


def regression_metrics(pred: object, label: object) -> dict[str, float]:
    """MOSI / MOSEI metrics, MMSA's ``__eval_mosi_regression`` (docs/references.md "Metrics").

    ``pred`` and ``label`` are 1-D array-likes of equal, non-zero length (labels in [-3, 3]);
    anything else, or a nan / inf value, raises ``ValueError``. Keys:

    - ``mae``: ``mean|p - t|`` on unclipped values.
    - ``corr``: Pearson correlation of ``p`` and ``t``. Undefined when either side is constant
      (MMSA's ``np.corrcoef`` returns nan there, including for a single sample, and noise when
      predictions differ only by float rounding); this function returns **0.0** when either
      side is constant up to rounding: its values span at most ``CONSTANT_SPREAD`` (1e-5)
      times ``max(1, max |x|)`` (`is_constant`). The same rule holds at every batch size.
    - ``acc2_has0`` / ``f1_has0``: accuracy / weighted F1 of ``p >= 0`` vs ``t >= 0`` over all
      samples (a prediction or label of exactly 0 counts as non-negative).
    - ``acc2_non0`` / ``f1_non0``: samples with ``t == 0`` are dropped, then ``p > 0`` vs
      ``t > 0`` (a prediction of exactly 0 counts as non-positive). When every label is 0 no
      sample is left and both are **nan**.
    - ``acc5``: ``mean(round(clip(p, -2, 2)) == round(clip(t, -2, 2)))``.
    - ``acc7``: the same with clipping to [-3, 3].

    ``round`` is round-half-to-even (``np.round``: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2). F1 is
    ``f1_score(true, pred, average="weighted")`` with the true labels first; see
    :func:`weighted_f1` for its zero-division and zero-support conventions.
    """
    p, t = _pair(pred, label)

    has0_t = t >= 0
    has0_p = p >= 0

    keep = t != 0
    if np.any(keep):
        non0_t = t[keep] > 0
        non0_p = p[keep] > 0
        acc2_non0 = _accuracy(non0_p, non0_t)
        f1_non0 = weighted_f1(non0_t, non0_p)
    else:
        acc2_non0 = f1_non0 = math.nan

    def acc_k(bound: float) -> float:
        return _accuracy(np.round(np.clip(p, -bound, bound)), np.round(np.clip(t, -bound, bound)))

    return {
        "mae": float(np.mean(np.abs(p.astype(np.float64) - t.astype(np.float64)))),
        "corr": _pearson(p, t),
        "acc2_has0": _accuracy(has0_p, has0_t),
        "f1_has0": weighted_f1(has0_t, has0_p),
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "acc5": acc_k(2.0),
        "acc7": acc_k(3.0),
    }


def sims_metrics(pred: object, label: object) -> dict[str, float]:
    """CH-SIMS metrics, MMSA's ``__eval_sims_regression`` (docs/references.md "Metrics").

    Both ``pred`` and ``label`` are first clipped to [-1, 1]; input rules as for
    :func:`regression_metrics`. Keys:

    - ``mae``, ``corr``: on the clipped values (``corr`` is 0.0 when either side is constant).
    - ``acc2``: classes by ``(lo, hi]`` bins with edges [-1.01, 0, 1.01] (exactly 0 is
      non-positive).
    - ``acc3``: edges [-1.01, -0.1, 0.1, 1.01] (exactly -0.1 is negative, exactly 0.1 neutral).
    - ``acc5``: edges [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01] (exactly -0.1 falls in (-0.7, -0.1]).
    - ``f1``: weighted F1 (true labels first) on the Acc-2 classes.

    Bin edges are compared in each array's own floating dtype, as NumPy does for MMSA's float32
    arrays, so a float32 label of 0.1 stays on the neutral side of the 0.1 edge.
    """
    p, t = _pair(pred, label)
    p = np.clip(p, -1.0, 1.0)
    t = np.clip(t, -1.0, 1.0)
    p2, t2 = _bin(p, SIMS_EDGES_2), _bin(t, SIMS_EDGES_2)
    return {
        "mae": float(np.mean(np.abs(p.astype(np.float64) - t.astype(np.float64)))),
        "corr": _pearson(p, t),
        "acc2": _accuracy(p2, t2),
        "acc3": _accuracy(_bin(p, SIMS_EDGES_3), _bin(t, SIMS_EDGES_3)),
        "acc5": _accuracy(_bin(p, SIMS_EDGES_5), _bin(t, SIMS_EDGES_5)),
        "f1": weighted_f1(t2, p2),
    }


def auilc(values: object, step: float = 0.1) -> float:
    """Area under an indicator-vs-missing-rate curve, EMT-DLFR's AUILC (docs/references.md).

    ``sum((m[i] + m[i + 1]) / 2 * step)`` over consecutive points ``m`` taken at equally spaced
    rates (0.0..1.0 for MOSI / MOSEI, 0.0..0.5 for CH-SIMS, ``step`` 0.1). It is NOT divided by
    the range width (see :func:`mean_over_curve`). Needs at least 2 values (``ValueError``
    otherwise); a nan value propagates to the result.
    """
    m = _curve(values, "values")
    step = _check_step(step)
    if m.size < 2:
        raise ValueError(f"auilc needs at least 2 values, got {m.size}")
    return float(np.sum((m[:-1] + m[1:]) / 2.0 * step))


def mean_over_curve(values: object, step: float = 0.1) -> float:
    """Width-normalised AUILC: ``auilc(values, step) / (step * (len(values) - 1))``.

    The trapezoid mean of the curve over its range (EMT-DLFR's AUILC, docs/references.md, divided by
    the range width), comparable across ranges of different width. A single value is returned
    unchanged; an empty curve raises ``ValueError``.
    """
    m = _curve(values, "values")
    step = _check_step(step)
    if m.size == 0:
        raise ValueError("mean_over_curve needs at least 1 value")
    if m.size == 1:
        return float(m[0])
    return auilc(m, step) / (step * (m.size - 1))


def effective_robustness(curve: object, reference_curve: object) -> float:
    """MultiBench's effective robustness (docs/references.md "Metrics").

    ``sum_i (a_i - a_0) - sum_i (LF_i - LF_0)`` where ``a`` is ``curve`` and ``LF`` the
    ``reference_curve`` (late fusion in MultiBench), both over the same noise levels with the
    clean level first. The curves must be 1-D, non-empty and of equal length (``ValueError``).
    """
    a = _curve(curve, "curve")
    lf = _curve(reference_curve, "reference_curve")
    if a.shape != lf.shape:
        raise ValueError(
            f"curve and reference_curve must have equal length, got shapes {a.shape} and {lf.shape}"
        )
    if a.size == 0:
        raise ValueError("effective_robustness needs non-empty curves")
    return float(np.sum(a - a[0]) - np.sum(lf - lf[0]))
