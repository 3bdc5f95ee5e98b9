"""Study kind ``search``: Ray Tune + Optuna's seeded TPE + ASHA over a search space.

Section ``search:`` (`SearchSection`): ``num_samples`` trials sampled by Optuna's TPE (seed
``seed``) from ``space`` (empty: the model's own space, `ModelSpec.search_space`), pruned by
ASHA (``grace_period``, ``reduction_factor``, on training epochs). Objective:
``best/val/spectrum_score`` (the best-so-far validation spectrum score,
`robustmsa.evaluation.summaries.spectrum_score`), minimised.

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
from dataclasses import dataclass, field

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


@dataclass
class SearchSection:
    """The ``search:`` section (module docstring)."""

    num_samples: int = 8
    seed: int = 0
    grace_period: int = 2
    reduction_factor: int = 2
    space: list[ParamSpace] = field(default_factory=list)  # empty: the model's own space

    def __post_init__(self) -> None:
        for name in ("num_samples", "grace_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor: must be >= 2, got {self.reduction_factor}")


def check(config: StudyConfig) -> None:
    """A search that lists no ``search.space`` searches its model's characteristic
    hyperparameters (``ModelSpec.search_space``); every searched parameter names a real config
    key, and a string ``high`` an earlier searched one.

    Only the key is checked here: a sampled value is validated with the rest of the trial's
    config when the trial builds it (constraints between values, such as ``top_k <=
    num_experts``, depend on the other sampled values)."""
    from robustmsa.models import MODELS

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


def log_study_summary(client, parent_run_id: str, result: StudyResult) -> None:
    """The study's summary on its parent run: the selected trial's score (``best/...``), the
    reference's and the oracle's validation spectrum scores (``reference/...``, ``oracle/...``),
    the selected and reference run ids as tags, and one row per trial (``tables/
    study_trials.json``: id, run, outcome, score, epochs, the searched parameters)."""
    import pandas as pd

    from robustmsa.tracking.runs import log_metrics, set_tags

    metrics = [(SEARCH_METRIC, result.best.score, 0)]
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


def _trial_rows(grid) -> list[TrialRow]:
    """One row per trial of Tune's ``ResultGrid``."""
    rows = []
    for r in grid:
        metrics = r.metrics or {}
        rows.append(
            TrialRow(
                trial_id=metrics.get("trial_id"),
                params=dict(r.config or {}),
                score=metrics.get(SEARCH_METRIC),
                epochs=metrics.get("epoch"),
                error=str(r.error).splitlines()[0] if r.error else None,
            )
        )
    return rows


def run(setup: StudySetup) -> None:
    """The search, the selection on validation, the test report and figures of the selected
    trial and the reference, the summary on the parent (module docstring)."""
    from concurrent.futures import Future

    import ray
    import yaml
    from optuna.samplers import TPESampler
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from robustmsa.config import from_dict
    from robustmsa.evaluation.summaries import spectrum_score
    from robustmsa.search.console import ConsoleProgress
    from robustmsa.search.space import define_by_run
    from robustmsa.search.study import child_runs
    from robustmsa.search.study_evaluation import present_runs, start_oracle
    from robustmsa.search.trial import ROLE_TAG, TrialRunFinisher
    from robustmsa.search.tuner import build_tuner

    config, result, client = setup.config, setup.result, setup.client
    s: SearchSection = config.kind_section
    epochs = max(config.training.epochs, 1)
    test_in_finishing = config.evaluation.test_policy == "completed"
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
        tuner = build_tuner(
            setup.trainable,
            name=f"{config.name}-{setup.parent[:8]}",
            storage_path=result.storage_path,
            callbacks=[
                ConsoleProgress(
                    s.num_samples, config.training.epochs, OBJECTIVE, "trial", setup.started
                ),
                finisher,
            ],
            max_concurrent=setup.max_concurrent,
            reuse_actors=setup.in_process,
            trial_prefix="trial",
            num_samples=s.num_samples,
            search_alg=OptunaSearch(
                space=define_by_run(s.space),
                metric=SEARCH_METRIC,
                mode="min",
                sampler=TPESampler(seed=s.seed),
            ),
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=epochs,
                grace_period=min(s.grace_period, epochs),
                reduction_factor=s.reduction_factor,
            ),
            metric=SEARCH_METRIC,
            mode="min",
        )
        grid = tuner.fit()
        reference_rows = setup.reference
        if isinstance(reference_rows, Future):
            reference_rows = reference_rows.result()  # raises when the reference failed
        finisher.submit_held()
        setup.finishing.wait()
        result.trials = _trial_rows(grid)
        scored = [t for t in result.trials if t.score is not None and not t.error]
        if not scored:
            errors = [t.error for t in result.trials if t.error]
            raise RobustMSAError(f"study {config.name}: no trial finished ({errors[:1]})")
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
    client.log_text(
        setup.parent, yaml.safe_dump(result.best_config, sort_keys=False), "best_config.yaml"
    )
    if failed:
        raise RobustMSAError(f"study {config.name}: presenting runs failed: {'; '.join(failed)}")


def format_lines(result: StudyResult) -> list[str]:
    """The console summary: one line per trial, the reference and the oracle beside them."""
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
    if result.best:
        lines.append(
            f"Best trial {result.best.trial_id}: validation spectrum score "
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
