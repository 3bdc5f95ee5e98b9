"""Study kind ``search``: Ray Tune + Optuna's seeded TPE + ASHA over a search space.

Section ``search:`` (`SearchSection`): ``num_samples`` trials sampled by Optuna's TPE (seed
``seed``) from ``space`` (empty: the model's own space, `ModelSpec.search_space`), pruned by
ASHA (``grace_period``, ``reduction_factor``, on training epochs) or the median stopping rule
(``scheduler: median``, `robustmsa.search.schedulers`); ``sampler: random`` and ``scheduler:
none`` give plain random search, the baseline that benchmarks/search_efficiency.py measures the
default against. Objective:
``best/val/spectrum_score`` (the best-so-far validation spectrum score,
`robustmsa.evaluation.summaries.spectrum_score`), minimised.

Several objectives (``objectives``, e.g. ``[val/spectrum_score, val/mae]``: the spectrum score
and any clean-validation metric, ``val/<metric>``, each minimised when lower is better (MAE)
and maximised otherwise) make it Optuna's multi-objective TPE. Every objective is read at the
epoch the trial keeps (its best spectrum score: one checkpoint per trial); ASHA prunes on the
first objective. The Pareto front of the trials (none better on every objective and strictly
on one) is logged on the parent (``tables/pareto_front.json``, ``pareto/pareto_front.png``)
and the selected trial is named by one rule, `knee`: each objective min-max normalised over
the front (0 the front's best, 1 its worst), the member closest (Euclidean) to the ideal point
of all zeros; ties go to the better first objective. With one objective the selected trial is
simply the best.

``trial_epoch_budget`` gives the search its compute in trial-epochs
(`robustmsa.search.budget`): trials are proposed, up to ``num_samples``, until they have
trained that many epochs together, so the epochs ASHA saves buy more trials.

The reference model trains beside the search (set-up's thread) and every completed trial's run
gets its effective robustness against that model's validation curves. What is evaluated beyond
each epoch's validation follows ``evaluation.test_policy`` (`robustmsa.search.
study_evaluation`): the oracle once per split on the parent (computed beside the reference's
training), the test split once, after the search, for the selected trial and the reference,
and figures for those two only. The parent run holds the study's summary: the best score, the
reference's and the oracle's scores, the trials table and ``best_config.yaml``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from robustmsa.config import ParamSpace, StudyConfig, build
from robustmsa.errors import ConfigError, RobustMSAError
from robustmsa.search.kinds.base import (
    REFERENCE_ROLE,
    ReferenceSummary,
    StudyKind,
    StudyResult,
    StudySetup,
    TrialRow,
)
from robustmsa.training.loop import OBJECTIVE

SEARCH_METRIC = "best/" + OBJECTIVE
TRIALS_TABLE = "tables/study_trials.json"
TRIAL_EPOCHS = "search/trial_epochs"  # on the parent: the epochs all trials trained


@dataclass
class SearchSection:
    """The ``search:`` section (module docstring)."""

    num_samples: int = 8
    seed: int = 0
    grace_period: int = 2
    reduction_factor: int = 2
    space: list[ParamSpace] = field(default_factory=list)  # empty: the model's own space
    objectives: list[str] = field(default_factory=list)  # empty: [val/spectrum_score]
    sampler: Literal["tpe", "random"] = "tpe"  # random: the baseline of search_efficiency.py
    # asha: ASHA's rungs (grace_period, reduction_factor); median: Tune's median stopping rule
    # (after grace_period epochs, a trial whose best is worse than the median of the other
    # trials' running means at that epoch stops); none: every trial runs all its epochs.
    scheduler: Literal["asha", "median", "none"] = "asha"
    # TPE samples its first points at random: Optuna's default of 10 would leave a search of 8
    # trials random throughout. None: half the trials (at least 2).
    startup_trials: int | None = None
    # TPE's joint density over the parameters (Optuna's multivariate TPE) instead of one per
    # parameter: it sees that, say, a high rate pairs with few experts. A parameter whose range
    # moves with another (top_k up to num_experts) is still drawn on its own.
    multivariate: bool = False
    # The study's compute in trial-epochs (robustmsa.search.budget): once its trials have
    # trained this many epochs together it ends; until then it proposes up to num_samples
    # trials, so the epochs ASHA saves buy more trials. None: num_samples trials, whatever
    # they cost.
    trial_epoch_budget: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_samples", "grace_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor: must be >= 2, got {self.reduction_factor}")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives: repeated in {self.objectives}")
        if self.startup_trials is not None and self.startup_trials < 1:
            raise ValueError(f"startup_trials: must be >= 1, got {self.startup_trials}")
        if self.trial_epoch_budget is not None and self.trial_epoch_budget < 1:
            raise ValueError(f"trial_epoch_budget: must be >= 1, got {self.trial_epoch_budget}")

    def resolved_startup_trials(self) -> int:
        """TPE's random start (``startup_trials``; None: half the trials, at least 2)."""
        if self.startup_trials is not None:
            return self.startup_trials
        return max(2, self.num_samples // 2)

    def objective_names(self) -> list[str]:
        """The objectives as configured (``val/...``), the spectrum score when none."""
        return list(self.objectives) or [OBJECTIVE]


def objective_mode(name: str) -> str:
    """``min`` for the spectrum score and MAE, ``max`` for the other metrics."""
    from robustmsa.evaluation.metrics import LOWER_IS_BETTER

    metric = name.removeprefix("val/")
    return "min" if name == OBJECTIVE or metric in LOWER_IS_BETTER else "max"


def _clean_metrics() -> list[str]:
    import numpy as np

    from robustmsa.evaluation.metrics import regression_metrics

    return sorted(regression_metrics(np.array([0.5, -0.5]), np.array([1.0, -1.0])))


def _check_objectives(config: StudyConfig) -> None:
    s: SearchSection = config.kind_section
    known = [OBJECTIVE] + [f"val/{m}" for m in _clean_metrics()]
    for i, name in enumerate(s.objectives):
        if name not in known:
            raise ConfigError(
                f"search.objectives[{i}]: unknown objective {name!r} (known: {known})"
            )
        if name != OBJECTIVE and "clean" not in config.spectrum.protocols:
            raise ConfigError(
                f"search.objectives[{i}]: {name} is measured on the clean validation point; "
                f"spectrum.protocols must list 'clean', got {config.spectrum.protocols}"
            )


def check(config: StudyConfig) -> None:
    """A search that lists no ``search.space`` searches its model's characteristic
    hyperparameters (``ModelSpec.search_space``); every searched parameter names a real config
    key, and a string ``high`` an earlier searched one.

    Only the key is checked here: a sampled value is validated with the rest of the trial's
    config when the trial builds it (constraints between values, such as ``top_k <=
    num_experts``, depend on the other sampled values)."""
    from robustmsa.models import MODELS

    _check_objectives(config)
    s: SearchSection = config.kind_section
    if not s.space:
        entries = MODELS[config.model.name].search_space
        s.space = [
            build(ParamSpace, dict(e), f"search.space[{i}] (model default)")
            for i, e in enumerate(entries)
        ]
    seen: set[str] = set()
    base = config.to_dict()
    model_fields = {f.name for f in dataclasses.fields(MODELS[config.model.name].config_cls)}
    for i, p in enumerate(s.space):
        where = f"search.space[{i}]"
        if p.name.startswith(("search.", "study.")) or p.name in seen:
            raise ConfigError(f"{where}.name: {p.name!r} cannot be searched (or is duplicated)")
        if p.name.startswith("model.params."):
            ok = p.name.removeprefix("model.params.") in model_fields
        else:
            node = base
            for part in p.name.split("."):
                ok = isinstance(node, dict) and part in node
                if not ok:
                    break
                node = node[part]
            ok = ok and not isinstance(node, dict)
        if not ok:
            raise ConfigError(f"{where}.name: {p.name}: unknown key")
        if isinstance(p.high, str) and p.high not in seen:
            raise ConfigError(f"{where}.high: {p.high!r} is not an earlier searched parameter")
        seen.add(p.name)
    _check_feasible(config, s.space)


FEASIBILITY_DRAWS = 32


def _check_feasible(config: StudyConfig, space: list[ParamSpace]) -> None:
    """`ConfigError` when no point of ``space`` gives a valid config: ``FEASIBILITY_DRAWS``
    points drawn at random (seeded) all fail the model's own checks (``top_k`` above every
    possible ``num_experts``, say). Caught here, at load time, it names the keys; caught by
    the trials, it came after the reference model had trained."""
    import optuna
    from optuna.samplers import RandomSampler

    from robustmsa.models import MODELS
    from robustmsa.search.space import suggest

    spec = MODELS[config.model.name]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=RandomSampler(seed=0))
    finally:
        optuna.logging.set_verbosity(verbosity)
    first = None
    for _ in range(FEASIBILITY_DRAWS):
        trial = study.ask()
        try:
            suggest(trial, space)
            # The model's own checks (constraints between its parameters); the other keys
            # are checked one by one when a trial builds its config.
            params = dict(config.model.params)
            for key, value in trial.params.items():
                if key.startswith("model.params."):
                    params[key.removeprefix("model.params.")] = value
            build(spec.config_cls, params, "model.params")
            return
        except (ValueError, ConfigError) as exc:  # a bound below the low, a model check
            first = first or (dict(trial.params), exc)
    params, exc = first
    names = ", ".join(p.name for p in space)
    raise ConfigError(
        f"search.space: no valid config among {FEASIBILITY_DRAWS} points drawn from it "
        f"({names}); at {params}: {exc}"
    )


def log_study_summary(client, parent_run_id: str, result: StudyResult) -> None:
    """The study's summary on its parent run: the selected trial's score (``best/...``), the
    reference's and the oracle's validation spectrum scores (``reference/...``, ``oracle/...``),
    the selected and reference run ids as tags, the trial-epochs the trials trained together
    (``search/trial_epochs``, what a ``trial_epoch_budget`` counts) and one row per trial
    (``tables/study_trials.json``: id, run, outcome, score, epochs, the searched parameters)."""
    import pandas as pd

    from robustmsa.tracking.runs import log_metrics, set_tags

    metrics = [(SEARCH_METRIC, result.best.score, 0)]
    metrics.append((TRIAL_EPOCHS, sum(t.epochs or 0 for t in result.trials), 0))
    tags = {"robustmsa.best_trial": result.best.trial_id}
    tags["robustmsa.selected_run_id"] = result.selected_run_id
    if result.reference:
        metrics.append((f"reference/{OBJECTIVE}", result.reference.score, 0))
        tags["robustmsa.reference_run_id"] = result.reference.run_id
    if result.oracle_score is not None:
        metrics.append((f"oracle/{OBJECTIVE}", result.oracle_score, 0))
    log_metrics(client, parent_run_id, metrics)
    set_tags(client, parent_run_id, tags)
    keys = ("trial_id", "run_id", "outcome", "score", "epochs")
    rows = [{k: getattr(t, k) for k in keys} | t.params for t in result.trials]
    client.log_table(parent_run_id, pd.DataFrame(rows).astype(object), TRIALS_TABLE)


def _trial_rows(grid, objectives: list[str]) -> list[TrialRow]:
    """One row per trial of Tune's ``ResultGrid``, with its value of every objective."""
    rows = []
    for r in grid:
        metrics = r.metrics or {}
        scores = {o: metrics["best/" + o] for o in objectives if "best/" + o in metrics}
        rows.append(
            TrialRow(
                trial_id=metrics.get("trial_id"),
                params=dict(r.config or {}),
                score=metrics.get(SEARCH_METRIC),
                epochs=metrics.get("epoch"),
                error=str(r.error).splitlines()[0] if r.error else None,
                scores=scores,
            )
        )
    return rows


def _signed(row: TrialRow, objectives: list[str]) -> list[float]:
    """The row's objective values, each turned so that lower is better."""
    return [row.scores[o] if objective_mode(o) == "min" else -row.scores[o] for o in objectives]


def pareto_front(rows: list[TrialRow], objectives: list[str]) -> list[TrialRow]:
    """The rows no other row dominates (at least as good on every objective, strictly better
    on one), in the given order."""
    values = [_signed(r, objectives) for r in rows]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return [r for r, v in zip(rows, values, strict=True)
            if not any(dominates(w, v) for w in values)]  # fmt: skip


def knee(front: list[TrialRow], objectives: list[str]) -> TrialRow:
    """The selection rule of a multi-objective search (module docstring)."""
    values = [_signed(r, objectives) for r in front]
    lows = [min(col) for col in zip(*values, strict=True)]
    highs = [max(col) for col in zip(*values, strict=True)]

    def distance(v: list[float]) -> float:
        parts = [
            (x - lo) / (hi - lo) if hi > lo else 0.0
            for x, lo, hi in zip(v, lows, highs, strict=True)
        ]
        return sum(p * p for p in parts) ** 0.5

    order = sorted(range(len(front)), key=lambda i: (distance(values[i]), values[i][0]))
    return front[order[0]]


PARETO_TABLE = "tables/pareto_front.json"
SELECTION_TAG = "robustmsa.selection_rule"


def log_pareto(client, parent_run_id: str, result: StudyResult, objectives: list[str]) -> None:
    """The Pareto front on the parent run: a table (every scored trial, ``on_front`` and
    ``selected`` columns), a figure of the first two objectives and the rule as a tag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    front_ids = {t.trial_id for t in result.pareto}
    scored = [t for t in result.trials if len(t.scores) == len(objectives)]
    rows = [
        {"trial_id": t.trial_id, "run_id": t.run_id, "outcome": t.outcome, **t.scores,
         "on_front": t.trial_id in front_ids, "selected": t is result.best}
        for t in scored
    ]  # fmt: skip
    client.log_table(parent_run_id, pd.DataFrame(rows).astype(object), PARETO_TABLE)
    client.set_tag(parent_run_id, SELECTION_TAG, "knee: closest to the ideal point over the "
                   "min-max normalised Pareto front (docs/study_kinds.md)")  # fmt: skip
    x, y = objectives[0], objectives[1]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter([t.scores[x] for t in scored], [t.scores[y] for t in scored], c="0.6",
               label="trials")  # fmt: skip
    front = sorted(result.pareto, key=lambda t: t.scores[x])
    ax.plot([t.scores[x] for t in front], [t.scores[y] for t in front], "o-", label="Pareto front")
    ax.scatter([result.best.scores[x]], [result.best.scores[y]], s=160, facecolors="none",
               edgecolors="red", label=f"selected ({result.best.trial_id})")  # fmt: skip
    ax.set_xlabel(f"{x} ({objective_mode(x)})")
    ax.set_ylabel(f"{y} ({objective_mode(y)})")
    ax.legend()
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pareto_front.png"
        fig.savefig(path, dpi=100)
        client.log_artifact(parent_run_id, str(path), artifact_path="pareto")
    plt.close(fig)


def optuna_sampler(s: SearchSection):
    """The seeded Optuna sampler of ``s``: TPE (``startup_trials``, ``multivariate``) or random."""
    from optuna.samplers import RandomSampler, TPESampler

    if s.sampler == "random":
        return RandomSampler(seed=s.seed)
    # constant_liar: a trial still running counts as a poor result, so concurrent trials are
    # not all proposed next to the same promising point.
    return TPESampler(
        seed=s.seed,
        n_startup_trials=s.resolved_startup_trials(),
        constant_liar=True,
        multivariate=s.multivariate,
    )


def run(setup: StudySetup) -> None:
    """The search, the selection on validation, the test report and figures of the selected
    trial and the reference, the summary on the parent (module docstring)."""
    from concurrent.futures import Future

    import ray
    import yaml
    from ray.tune.search.optuna import OptunaSearch

    from robustmsa.config import from_dict
    from robustmsa.evaluation.summaries import spectrum_score
    from robustmsa.search.console import ConsoleProgress
    from robustmsa.search.schedulers import trial_scheduler
    from robustmsa.search.space import define_by_run
    from robustmsa.search.study import child_runs
    from robustmsa.search.study_evaluation import present_runs, start_oracle
    from robustmsa.search.trial import ROLE_TAG, TrialRunFinisher
    from robustmsa.search.tuner import build_tuner, fit

    config, result, client = setup.config, setup.result, setup.client
    s: SearchSection = config.kind_section
    epochs = max(config.training.epochs, 1)
    test_in_finishing = config.evaluation.test_policy == "completed"
    objectives = s.objective_names()
    metrics = ["best/" + o for o in objectives]
    modes = [objective_mode(o) for o in objectives]
    # Beside the reference's training: the one computation of the study's ceiling.
    oracle = start_oracle(setup.uri, setup.parent, setup.base, setup.plan.finishing)
    try:
        finisher = TrialRunFinisher(
            setup.uri,
            result.experiment_id,
            setup.reference,
            setup.plan.finishing,
            setup.finishing,
            storage_path=result.storage_path,
            evaluate_test=test_in_finishing,
        )
        sampler = optuna_sampler(s)
        tuner = build_tuner(
            setup.trainable,
            name=f"{config.name}-{setup.parent[:8]}",
            storage_path=result.storage_path,
            callbacks=[
                ConsoleProgress(
                    s.num_samples,
                    config.training.epochs,
                    OBJECTIVE,
                    "trial",
                    setup.started,
                    budget=s.trial_epoch_budget,
                ),
                finisher,
            ],
            max_concurrent=setup.max_concurrent,
            reuse_actors=setup.in_process,
            trial_prefix="trial",
            num_samples=s.num_samples,
            search_alg=OptunaSearch(
                space=define_by_run(s.space),
                # One objective: a name and a mode; several: lists (Optuna's multi-objective
                # TPE, the same sampler class).
                metric=metrics if len(metrics) > 1 else metrics[0],
                mode=modes if len(modes) > 1 else modes[0],
                sampler=sampler,
            ),
            scheduler=trial_scheduler(s, epochs),
            metric=metrics[0],  # the scheduler stops trials on the first objective
            mode=modes[0],
            max_failures=config.study.max_failures,
            trial_epoch_budget=s.trial_epoch_budget,
        )
        grid = fit(tuner, "the search")
        reference_rows = setup.reference
        if isinstance(reference_rows, Future):
            reference_rows = reference_rows.result()  # raises when the reference failed
        finisher.submit_held()
        finisher.finish_leftovers(grid)  # a resumed study's trials finished before it stopped
        setup.finishing.wait()
        result.trials = _trial_rows(grid, objectives)
        scored = [t for t in result.trials if t.score is not None and not t.error]
        if len(objectives) > 1:
            scored = [t for t in scored if len(t.scores) == len(objectives)]
        if not scored:
            errors = [t.error for t in result.trials if t.error]
            raise RobustMSAError(f"study {config.name}: no trial finished ({errors[:1]})")
        if len(objectives) > 1:
            result.pareto = pareto_front(scored, objectives)
            result.best = knee(result.pareto, objectives)
        else:
            result.best = min(scored, key=lambda t: t.score)
        result.best_config = from_dict(setup.base, result.best.params).to_dict()
        runs = child_runs(client, result.experiment_id, setup.parent)
        for t in result.trials:
            found = runs.get(t.trial_id)
            t.run_id = found.info.run_id if found else None
            t.outcome = found.data.tags.get("robustmsa.outcome") if found else None
        result.selected_run_id = result.best.run_id
        presented = [result.selected_run_id]
        if reference_rows is not None:
            ref = next(r for r in runs.values() if r.data.tags.get(ROLE_TAG) == REFERENCE_ROLE)
            result.reference = ReferenceSummary(
                ref.info.run_id, config.study.reference_model, spectrum_score(reference_rows)
            )
            presented.append(ref.info.run_id)
        failed = present_runs(setup.uri, presented, oracle, setup.plan.finishing)
        oracle_found = ray.get(oracle)
    except BaseException:
        ray.cancel(oracle)
        raise
    if oracle_found:
        result.oracle_score = spectrum_score(oracle_found["valid"])
    log_study_summary(client, setup.parent, result)
    if result.pareto:
        log_pareto(client, setup.parent, result, objectives)
    client.log_text(
        setup.parent, yaml.safe_dump(result.best_config, sort_keys=False), "best_config.yaml"
    )
    if failed:
        raise RobustMSAError(f"study {config.name}: presenting runs failed: {'; '.join(failed)}")


def format_lines(result: StudyResult) -> list[str]:
    """The console summary: one line per trial, the reference, the oracle and the constant
    predictor beside them."""
    lines = []
    if result.trials:
        lines.append(f"  {'trial':<12} {'score':>8} {'epochs':>6}  {'outcome':<9}  params")
    for t in result.trials:
        score = f"{t.score:.4f}" if t.score is not None else "-"
        params = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in sorted(t.params.items()))
        note = f"  [error: {t.error}]" if t.error else ""
        outcome = t.outcome or "-"
        lines.append(
            f"  {t.trial_id!s:<12} {score:>8} {t.epochs!s:>6}  {outcome:<9}  {params}{note}"
        )
    if result.trials and result.reference:
        r = result.reference
        lines.append(
            f"  {'reference':<12} {r.score:>8.4f} {'':>6}  {'':<9}  {r.model} at its "
            "defaults (the baseline of effective robustness)"
        )
    if result.trials and result.oracle_score is not None:
        lines.append(
            f"  {'oracle':<12} {result.oracle_score:>8.4f} {'':>6}  {'':<9}  the Bayes oracle on "
            "the same inputs (the ceiling)"
        )
    if result.trials and result.floor_score is not None:
        lines.append(
            f"  {'constant':<12} {result.floor_score:>8.4f} {'':>6}  {'':<9}  the training "
            "median whatever the input (the floor)"
        )
    if result.pareto:
        names = list(result.best.scores)
        lines.append(f"Pareto front of {', '.join(names)}: " + "; ".join(
            f"{t.trial_id} (" + ", ".join(f"{t.scores[n]:.4f}" for n in names) + ")"
            for t in result.pareto
        ) + f"; selected by the knee rule: {result.best.trial_id}")  # fmt: skip
    if result.best:
        lines.append(
            f"{'Selected' if result.pareto else 'Best'} trial {result.best.trial_id}: "
            "validation spectrum score "
            f"{result.best.score:.4f} (mean MAE over the reliability spectrum); its test "
            f"report and figures, and the reference's: runs {result.selected_run_id}"
            + (f" and {result.reference.run_id}" if result.reference else "")
        )
    return lines


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


KIND = StudyKind(
    name="search",
    section=SearchSection,
    run=run,
    trial_count=lambda config: config.kind_section.num_samples,
    check=check,
    reference="beside",
    smoke={"search.num_samples": 2, "search.grace_period": 1},
    reference_overrides={"search.space": []},
    format=format_lines,
)
