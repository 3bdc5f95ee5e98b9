"""What a study kind is, what set-up hands it, and the typed rows a study returns.

A study is set-up (`robustmsa.search.study.run_study`: tracking, data, Ray, the parent run,
the reference model), one kind's `StudyKind.run`, and teardown (every run ended, the parent's
status). A kind is one module of this package with its own config section (the top-level key
named after the kind, built from `StudyKind.section` and checked by `StudyKind.check` when the
config loads, before anything runs) and one line in the registry (`robustmsa.search.kinds`).

This module imports neither Ray nor MLflow: the config loader reads the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from robustmsa.config import StudyConfig

ORACLE = "oracle"  # the Bayes oracle's name in every comparison table
REFERENCE_ROLE = "reference"  # the study's reference model: role tag and comparison name


@dataclass
class Variant:
    """A fixed trial of a study (no search): ``role`` names it (``reference``, ``rate-0.30``,
    ...); ``overrides`` are config key paths to values applied on top of the study config
    (`robustmsa.search.variants.run_variants` trains a list of them)."""

    role: str
    overrides: dict[str, Any]


@dataclass
class TrialRow:
    """One trial of a search (or the runs a kind trained): its id and MLflow run, the sampled
    parameters, its score (``best/val/spectrum_score``; None when it never reported), the
    epochs it trained, its outcome tag (``completed``, ``pruned``, ...) and its error line."""

    trial_id: str | None
    params: dict[str, Any]
    score: float | None
    epochs: int | None
    error: str | None = None
    run_id: str | None = None
    outcome: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # every objective (search.objectives)


@dataclass
class CurveRow:
    """A point of a per-rate comparison: ``model`` (``per_rate``, ``one_checkpoint``,
    ``oracle``) at ``level`` of the compared curve, one metric's value."""

    model: str
    level: float
    metric: str
    value: float


@dataclass
class SummaryRow:
    """A summary of one model on one split (``compare_models``): ``summary`` names it
    (``spectrum_mae``, ``oracle_excess_mae``, ``missing/all/mean_mae``, ...)."""

    split: str
    model: str
    summary: str
    value: float


@dataclass
class ConfirmRow:
    """A summary of a re-trained config over seeds on one split (``confirm``): ``model`` is
    ``confirmed`` or ``reference``, or ``difference`` (confirmed minus reference, paired by
    seed). ``mean``, sample ``std``, the 95 % confidence interval of the mean (Student t), over
    ``n`` seeds."""

    split: str
    summary: str
    model: str
    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int


@dataclass
class ReferenceSummary:
    run_id: str
    model: str
    score: float


@dataclass
class StudyResult:
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    storage_path: str
    kind: str = "search"
    trials: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    best_config: dict | None = None
    # per_rate, one_checkpoint_for_all: CurveRow; compare_models: SummaryRow; confirm: ConfirmRow
    rows: list[Any] = field(default_factory=list)
    pareto: list[TrialRow] = field(default_factory=list)  # search with several objectives
    code: dict[str, str] | None = None  # robustmsa.provenance.code_identity of the driver
    max_concurrent: int | None = None  # study.max_concurrent, resolved
    reference: ReferenceSummary | None = None
    oracle_score: float | None = None  # the oracle's validation spectrum score (synthetic data)
    # The constant predictor's (the training median's): the same MAE at every point, the floor.
    floor_score: float | None = None
    selected_run_id: str | None = None  # the run of the trial selected on validation
    wall_s: float = 0.0


@dataclass
class StudySetup:
    """What set-up hands a kind's `StudyKind.run`.

    ``base``: the config as a dict with local paths made absolute; ``ctx``: what every trial
    needs (`robustmsa.search.trial.StudyContext`); ``trainable``: `run_trial` registered with
    the trial's resources (`robustmsa.search.study.register_trial`); ``reference``: the
    reference model's validation rows, a ``concurrent.futures.Future`` of them (trained beside
    a search), or None (no reference model); ``finishing``: the trial runs' finishing tasks,
    which teardown awaits or cancels."""

    config: StudyConfig
    base: dict[str, Any]
    ctx: Any
    client: Any
    data_root: Path
    plan: Any
    max_concurrent: int
    in_process: bool
    trainable: str
    finishing: Any
    started: float
    result: StudyResult
    reference: Any = None

    @property
    def parent(self) -> str:
        return self.result.parent_run_id

    @property
    def uri(self) -> str:
        return self.result.tracking_uri

    def train(self, variants: list[Variant], name: str) -> dict[str, list[dict]]:
        """Train fixed ``variants`` as the study's trials, each finished (test report
        included) and measured against the reference's rows when there are any;
        `robustmsa.search.variants.run_variants`'s ``{role: validation rows}``."""
        from robustmsa.search.variants import run_variants

        reference = self.reference if isinstance(self.reference, list) else None
        return run_variants(
            self.ctx,
            variants,
            name=name,
            trainable=self.trainable,
            finishing_resources=self.plan.finishing,
            max_concurrent=self.max_concurrent,
            reuse_actors=self.in_process,
            reference_rows=reference,
            started=self.started,
        )


def _no_check(config: StudyConfig) -> None:
    return None


@dataclass(frozen=True)
class StudyKind:
    """A study kind.

    ``section``: the dataclass of its config section; ``check``: checks across sections at
    load time (raise `ConfigError` naming the key); ``run``: its body, which fills the
    `StudyResult` of the `StudySetup`; ``trial_count``: how many trials it trains at most
    (``study.max_concurrent: auto`` never exceeds it); ``reference``: when set-up trains the
    reference model: ``beside`` the kind (its rows a Future), ``first`` (its rows, finished,
    test report included) or ``none`` (the kind trains what it compares with); ``smoke``: the
    overrides of ``--smoke-test`` for this kind; ``reference_overrides``: what the reference
    variant resets in this kind's section (a search space names the searched model's
    parameters); ``format``: its lines of the console summary."""

    name: str
    section: type
    run: Callable[[StudySetup], None]
    trial_count: Callable[[StudyConfig], int]
    check: Callable[[StudyConfig], None] = _no_check
    reference: Literal["beside", "first", "none"] = "first"
    smoke: dict[str, Any] = field(default_factory=dict)
    reference_overrides: dict[str, Any] = field(default_factory=dict)
    format: Callable[[StudyResult], list[str]] | None = None
