"""A finished study read back from MLflow, for the notebooks in ``notebooks/`` (and anyone else).

Everything here reads through MLflow's client API and the project's public functions; nothing
is written (figures are returned unsaved, artifacts are read from temporary folders). What a
study logged, and where (`robustmsa.search.study`, `robustmsa.search.model_comparison`):

- the study's *parent run* (tag ``robustmsa.study``, no ``mlflow.parentRunId``): the flattened
  study config as params (``search.space`` holds the searched space), the selected trial's,
  the reference's and the oracle's validation spectrum scores, the oracle's spectrum tables
  ``spectrum/oracle_<split>.parquet``, and for ``compare_models`` the comparison table
  ``comparison/models.parquet`` with its figures;
- one *child run* per trial (tag ``robustmsa.trial_id``; ``robustmsa.outcome`` completed or
  pruned; ``robustmsa.role`` for the reference model and the models of a comparison): the
  trial's params, per-epoch metrics (step = epoch) and its spectrum tables.

Lookup: `open_client` (never creates a store), `find_study`, `study_runs`, `search_space`,
`selected_run_id`, `reference_run_id`, `study_scores`. Tables (pandas): `trials_frame`,
`score_history`, `outcome_summary`, `curve_summary`, `model_comparison_table`. Spectrum rows
(lists of dicts, `robustmsa.evaluation.spectrum`'s long form): `run_spectrum`, `trial_tables`,
`role_tables`, `study_oracle`, `excess_rows`. Optuna: `optuna_study` rebuilds an in-memory
study from the trials (the product does not persist one), `param_importances`. Drawing
(matplotlib `Figure` objects, no pyplot): `spectrum_curves_figure`, `heatmap_figures`,
`score_history_figure`, `param_effects_figure`, `importance_figure`, `oracle_gap_figure`;
`logged_images` reads PNG figures a run logged.

Importing this module imports neither torch nor Ray; the functions that read spectrum tables
import `robustmsa.evaluation.report` (which imports torch) when first called.

`short_errors` makes a notebook show a `RobustMSAError` as its one-line message.
"""

from __future__ import annotations

import ast
import math
import tempfile
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from robustmsa.config import ParamSpace
from robustmsa.errors import RobustMSAError
from robustmsa.evaluation.figures import (
    CURVE_PROTOCOLS,
    ORACLE_LABEL,
    X_LABELS,
    curve_series,
    grid_matrix,
    grid_modalities,
    heatmap_figure,
)
from robustmsa.tracking.runs import STUDY_TAG, TRIAL_TAG

if TYPE_CHECKING:
    import optuna

# The names a study logs under. Mirrored here rather than imported: their modules import torch
# or Ray (search.trial, training.loop), which a notebook reading a store does not need;
# tests/test_analysis.py checks that they agree.
PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "robustmsa.role"  # search.trial.ROLE_TAG
OUTCOME_TAG = "robustmsa.outcome"  # completed | pruned
EPOCHS_TAG = "robustmsa.epochs_run"
SELECTED_TAG = "robustmsa.selected_run_id"
REFERENCE_TAG = "robustmsa.reference_run_id"
REFERENCE_ROLE = "reference"  # search.study.REFERENCE_ROLE
OBJECTIVE = "val/spectrum_score"  # training.loop.OBJECTIVE, minimised
SEARCH_METRIC = "best/" + OBJECTIVE  # search.study.SEARCH_METRIC: the trial's score
SPACE_PARAM = "search.space"
KIND_PARAM = "search.kind"
COMPARISON_TABLE = "comparison/models.parquet"  # search.model_comparison
ORACLE_MODEL = "oracle"
COMPLETED, PRUNED = "completed", "pruned"
MAX_RUNS = 10000

TRIAL_COLUMNS = (
    "trial_id",
    "run_id",
    "run_name",
    "role",
    "outcome",
    "status",
    "score",
    "epochs",
    "start",
    "end",
    "duration_s",
)
HISTORY_COLUMNS = (
    "trial_id",
    "run_id",
    "role",
    "outcome",
    "metric",
    "step",
    "value",
    "time",
    "elapsed_s",
)


# ---------------------------------------------------------------------------------------------
# The store and the study


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory unless
    absolute, as SQLAlchemy reads it), None for any other store or an in-memory database."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = unquote(uri[len(prefix) :].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def open_client(uri: str) -> MlflowClient:
    """A client of the tracking store ``uri``. A ``sqlite:`` store must exist: MLflow would
    create an empty database (and a Default experiment) on first use, so a mistyped path is a
    `RobustMSAError` naming it, before anything is written."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise RobustMSAError(
            f"no MLflow store at {db} (tracking URI {uri}): run a study first (make study), or "
            "point MLFLOW_TRACKING_URI at the study's store"
        )
    return MlflowClient(uri)


def _no_study(client: MlflowClient, experiment: str) -> RobustMSAError:
    return RobustMSAError(f"experiment '{experiment}' has no study runs in {client.tracking_uri}")


def is_study_run(run: Run) -> bool:
    """A study's parent run: tagged with the study's name, nested under nothing."""
    tags = run.data.tags
    return STUDY_TAG in tags and PARENT_TAG not in tags


def find_study(
    client: MlflowClient,
    experiment: str,
    parent_run_id: str | None = None,
    *,
    kind: str | None = None,
) -> Run:
    """The parent run of a study of experiment ``experiment``: ``parent_run_id``, else the
    study that started last (whatever its status: a running or failed study is shown as far
    as it got). ``kind``: only a study of that ``search.kind`` (``search``,
    ``compare_models`` ...).

    `RobustMSAError` ``experiment 'X' has no study runs in <uri>`` when the experiment is
    missing, deleted or holds no study (of ``kind``); another naming ``parent_run_id`` when
    that run is not a study's parent run of the experiment (or not of ``kind``)."""
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        raise _no_study(client, experiment)
    if parent_run_id:
        from robustmsa.evaluation.report import get_run

        run = get_run(client, parent_run_id)
        if run.info.experiment_id != found.experiment_id or not is_study_run(run):
            raise RobustMSAError(
                f"run {parent_run_id!r} is not the parent run of a study of experiment "
                f"'{experiment}' in {client.tracking_uri}"
            )
        if kind and study_kind(run) != kind:
            raise RobustMSAError(
                f"run {parent_run_id!r} is a {study_kind(run)} study, not a {kind} study"
            )
        return run
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` != ''",
        run_view_type=ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time DESC"],
        max_results=MAX_RUNS,
    )
    studies = [r for r in runs if is_study_run(r)]
    if not studies:
        raise _no_study(client, experiment)
    of_kind = [r for r in studies if not kind or study_kind(r) == kind]
    if not of_kind:
        kinds = sorted({study_kind(r) for r in studies})
        raise RobustMSAError(
            f"experiment '{experiment}' has no {kind} study runs in {client.tracking_uri} "
            f"(only {', '.join(kinds)})"
        )
    return of_kind[0]


def study_runs(client: MlflowClient, parent: Run) -> list[Run]:
    """The child runs of the study ``parent`` (its trials, the reference model, the models of
    a comparison), by start time."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=MAX_RUNS,
    )
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def study_kind(parent: Run) -> str:
    """``search.kind`` of the study: ``search``, ``compare_models``, ``per_rate`` ..."""
    return parent.data.params.get(KIND_PARAM, "search")


def selected_run_id(parent: Run) -> str | None:
    """The run of the trial the study selected on validation (None while it runs)."""
    return parent.data.tags.get(SELECTED_TAG)


def reference_run_id(parent: Run, runs: Sequence[Run] = ()) -> str | None:
    """The reference model's run: the parent's tag, else the child of role ``reference``."""
    tagged = parent.data.tags.get(REFERENCE_TAG)
    if tagged:
        return tagged
    found = [r.info.run_id for r in runs if r.data.tags.get(ROLE_TAG) == REFERENCE_ROLE]
    return found[0] if found else None


def search_space(parent: Run) -> list[ParamSpace]:
    """The searched space of the study, from its parent's ``search.space`` param (the
    `ParamSpace` list of the config, logged as its Python repr); empty for a study that
    searched nothing. `RobustMSAError` when the param cannot be read back."""
    text = parent.data.params.get(SPACE_PARAM)
    if not text:
        return []
    try:
        entries = ast.literal_eval(text)
        return [ParamSpace(**entry) for entry in entries]
    except (ValueError, SyntaxError, TypeError) as exc:
        raise RobustMSAError(
            f"run {parent.info.run_id}: param {SPACE_PARAM} is not a search space ({exc}): "
            f"{text[:200]}"
        ) from exc


def _param_value(text: str | None, p: ParamSpace) -> Any:
    """A logged param (a string) as the value the trial drew: int, float or the choice."""
    if text is None:
        return None
    try:
        if p.type == "int":
            return int(float(text))
        if p.type == "float":
            return float(text)
    except ValueError:
        return text
    for choice in p.choices or []:
        if str(choice) == text:
            return choice
    return text


def _time(ms: int | None) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC") if ms else pd.NaT


def _epochs(run: Run) -> float:
    tag = run.data.tags.get(EPOCHS_TAG)
    if tag is not None:
        try:
            return int(tag)
        except ValueError:
            pass
    epoch = run.data.metrics.get("epoch")
    return int(epoch) if epoch is not None else math.nan


def trials_frame(
    client: MlflowClient,
    parent: Run,
    runs: Sequence[Run] | None = None,
    *,
    include_roles: bool = False,
) -> pd.DataFrame:
    """One row per trial of the study ``parent`` (`study_runs`, or ``runs``), by start time.

    Columns `TRIAL_COLUMNS` then one per searched parameter (`search_space`, named by its
    config key path, e.g. ``model.params.num_experts``, typed as drawn): ``trial_id`` (Tune's),
    ``run_id``, ``run_name``, ``role`` (None for a searched trial), ``outcome`` (``completed`` /
    ``pruned``, None while running), ``status`` (MLflow's), ``score`` (the trial's best
    validation spectrum score, ``best/val/spectrum_score``; NaN before its first epoch),
    ``epochs`` (epochs run), ``start`` / ``end`` (UTC timestamps), ``duration_s``.

    Only searched trials (no ``robustmsa.role``) unless ``include_roles``: then the reference
    model and the models of a comparison too. Shape ``(trials, 11 + parameters)``."""
    runs = study_runs(client, parent) if runs is None else runs
    space = search_space(parent)
    rows = []
    for run in runs:
        tags = run.data.tags
        if TRIAL_TAG not in tags or (ROLE_TAG in tags and not include_roles):
            continue
        info = run.info
        start, end = _time(info.start_time), _time(info.end_time)
        row = {
            "trial_id": tags[TRIAL_TAG],
            "run_id": info.run_id,
            "run_name": info.run_name,
            "role": tags.get(ROLE_TAG),
            "outcome": tags.get(OUTCOME_TAG),
            "status": info.status,
            "score": run.data.metrics.get(SEARCH_METRIC, math.nan),
            "epochs": _epochs(run),
            "start": start,
            "end": end,
            "duration_s": (end - start).total_seconds() if info.end_time else math.nan,
        }
        for p in space:
            row[p.name] = _param_value(run.data.params.get(p.name), p)
        rows.append(row)
    columns = [*TRIAL_COLUMNS, *(p.name for p in space)]
    return pd.DataFrame(rows, columns=columns)


def score_history(
    client: MlflowClient,
    trials: pd.DataFrame,
    metric: str = OBJECTIVE,
    *,
    since: int | None = None,
) -> pd.DataFrame:
    """The per-epoch history of ``metric`` (``val/spectrum_score`` by default, any per-epoch
    metric such as ``train/loss``) of every run of ``trials`` (`trials_frame`), in long form.

    Columns `HISTORY_COLUMNS`: the run's ``trial_id``, ``run_id``, ``role``, ``outcome``, the
    ``metric``, its ``step`` (the epoch), ``value``, ``time`` (UTC timestamp of the log) and
    ``elapsed_s`` (seconds since ``since``, epoch milliseconds: the parent's start time for a
    study's clock; else the first start among ``trials``). One row per logged point, sorted
    by time."""
    if since is None:
        starts = [s for s in trials["start"] if not pd.isna(s)] if len(trials) else []
        since = int(min(starts).timestamp() * 1000) if starts else 0
    rows = []
    for t in trials.itertuples(index=False):
        for m in client.get_metric_history(t.run_id, metric):
            rows.append(
                {
                    "trial_id": t.trial_id,
                    "run_id": t.run_id,
                    "role": t.role,
                    "outcome": t.outcome,
                    "metric": metric,
                    "step": int(m.step),
                    "value": float(m.value),
                    "time": _time(m.timestamp),
                    "elapsed_s": (m.timestamp - since) / 1000.0,
                }
            )
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return frame.sort_values(["time", "trial_id", "step"], ignore_index=True)


def outcome_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Completed against pruned trials: per outcome, how many trials, their epochs (mean,
    total), best and median score and mean duration. Index: outcome (``running`` for a trial
    without one); shape ``(outcomes, 6)``."""
    frame = trials.assign(outcome=trials["outcome"].fillna("running"))
    grouped = frame.groupby("outcome", sort=True)
    return pd.DataFrame(
        {
            "trials": grouped.size(),
            "mean_epochs": grouped["epochs"].mean(),
            "total_epochs": grouped["epochs"].sum(),
            "best_score": grouped["score"].min(),
            "median_score": grouped["score"].median(),
            "mean_duration_s": grouped["duration_s"].mean(),
        }
    )


# ---------------------------------------------------------------------------------------------
# Optuna


def distributions(space: Sequence[ParamSpace], params: Mapping[str, Any]) -> dict[str, Any]:
    """The Optuna distributions one trial drew ``params`` from: a bound naming an earlier
    parameter (``top_k`` up to ``num_experts``) takes that trial's value, as
    `robustmsa.search.space.suggest` does. Parameters missing from ``params`` are left out."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for p in space:
        if params.get(p.name) is None:
            continue
        high = params.get(p.high) if isinstance(p.high, str) else p.high
        if p.type == "categorical":
            out[p.name] = CategoricalDistribution(p.choices)
        elif p.type == "int":
            out[p.name] = IntDistribution(int(p.low), int(high), log=p.log)
        else:
            out[p.name] = FloatDistribution(float(p.low), float(high), log=p.log)
    return out


def optuna_study(trials: pd.DataFrame, space: Sequence[ParamSpace]) -> optuna.Study:
    """An in-memory Optuna study (direction minimize) rebuilt from ``trials`` (`trials_frame`)
    over ``space`` (`search_space`): a completed trial with a score becomes a COMPLETE Optuna
    trial of that value, a pruned one a PRUNED trial (its score as its last intermediate
    value), anything else (running, failed, no score) a FAIL trial; each with the trial id and
    run id as user attributes. The study's TPE state is not restored, only its trials: enough
    for Optuna's importance evaluators and visualisations."""
    import optuna
    from optuna.trial import TrialState

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created ..."
    try:
        study = optuna.create_study(direction="minimize", study_name="rebuilt from MLflow")
    finally:
        optuna.logging.set_verbosity(verbosity)
    names = [p.name for p in space]
    for t in trials.to_dict("records"):
        params = {n: _plain(t[n]) for n in names if n in t and not _missing(t[n])}
        dists = distributions(space, params)
        params = {n: v for n, v in params.items() if n in dists}
        score = t.get("score")
        attrs = {"trial_id": t["trial_id"], "run_id": t["run_id"]}
        if t.get("outcome") == COMPLETED and not _missing(score):
            trial = optuna.trial.create_trial(
                params=params, distributions=dists, value=float(score), user_attrs=attrs
            )
        elif t.get("outcome") == PRUNED:
            steps = {} if _missing(score) else {int(t.get("epochs") or 0): float(score)}
            trial = optuna.trial.create_trial(
                state=TrialState.PRUNED,
                params=params,
                distributions=dists,
                intermediate_values=steps,
                user_attrs=attrs,
            )
        else:
            trial = optuna.trial.create_trial(
                state=TrialState.FAIL, params=params, distributions=dists, user_attrs=attrs
            )
        study.add_trial(trial)
    return study


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """numpy scalars (from a DataFrame) as Python ones: Optuna checks types."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Importances:
    """Parameter importances of a rebuilt study (`param_importances`).

    ``values``: importance per parameter name, non-negative, summing to 1, largest first;
    empty when none could be computed. ``completed``: the completed trials they rest on.
    ``notes``: why they may mean little (too few trials, Optuna's own warnings)."""

    values: pd.Series
    completed: int
    notes: tuple[str, ...]


def param_importances(study: optuna.Study) -> Importances:
    """Optuna's parameter importances of ``study`` (`optuna_study`) with its default
    evaluator, PED-ANOVA (no scikit-learn needed; it also rates a parameter whose range
    depends on another, such as ``top_k``). Never raises for a small study: with no completed
    trial the values are empty, with one they are equal by construction, and either case is
    said in ``notes``."""
    import optuna
    from optuna.trial import TrialState

    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if completed == 0:
        return Importances(
            pd.Series(dtype=float, name="importance"),
            0,
            ("no completed trial: importances need at least two completed trials",),
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = optuna.importance.get_param_importances(study)
    if completed < 2:  # Optuna says "too small to compute importances": ours says why
        notes = [
            "1 completed trial: every parameter gets the same importance; importances need "
            "at least two completed trials, and mean little with fewer than about ten"
        ]
    else:
        notes = [str(w.message) for w in caught]
    series = pd.Series(values, dtype=float, name="importance")
    series.index.name = "parameter"
    return Importances(series, completed, tuple(dict.fromkeys(notes)))


# ---------------------------------------------------------------------------------------------
# Spectrum tables


def run_spectrum(client: MlflowClient, run_id: str, split: str = "test") -> list[dict] | None:
    """The spectrum rows a run logged for ``split`` (``spectrum/spectrum_<split>.parquet``;
    for a pruned trial's ``valid``, its checkpoint's rows), or None. Rows: ``protocol,
    modalities, level, metric, value, n`` (`robustmsa.evaluation.spectrum`)."""
    from robustmsa.evaluation.report import checkpoint_rows, logged_table

    rows = logged_table(client, run_id, f"spectrum_{split}")
    if rows is None and split == "valid":
        rows = checkpoint_rows(client, run_id)
    return rows


def study_oracle(client: MlflowClient, parent: Run, split: str = "test") -> list[dict] | None:
    """The study's Bayes-oracle rows for ``split`` (``spectrum/oracle_<split>.parquet`` of the
    parent run; synthetic data only), or None."""
    from robustmsa.evaluation.report import logged_table

    return logged_table(client, parent.info.run_id, f"oracle_{split}")


def trial_tables(
    client: MlflowClient,
    parent: Run,
    run_id: str | None = None,
    split: str = "test",
    runs: Sequence[Run] = (),
) -> dict[str, list[dict]]:
    """``{label: rows}`` of ``split`` for a trial (``run_id``, else the study's selected trial),
    labelled ``trial <trial id>``, and for the study's reference model, labelled
    ``reference`` (when it logged that split). `RobustMSAError` when the trial logged no
    rows for ``split`` (only the selected trial and the reference are evaluated on test)."""
    run_id = run_id or selected_run_id(parent)
    if not run_id:
        raise RobustMSAError(
            f"study run {parent.info.run_id} has selected no trial yet (tag {SELECTED_TAG}): "
            "give a trial's run id"
        )
    from robustmsa.evaluation.report import get_run

    run = get_run(client, run_id)
    rows = run_spectrum(client, run_id, split)
    if not rows:
        raise RobustMSAError(
            f"run {run_id} logged no {split} spectrum: a study evaluates only its selected "
            "trial and its reference on test; any trial that ran an epoch has 'valid'"
        )
    label = run.data.tags.get(ROLE_TAG) or f"trial {run.data.tags.get(TRIAL_TAG, run_id[:8])}"
    tables = {label: rows}
    ref = reference_run_id(parent, runs)
    if ref and ref != run_id:
        ref_rows = run_spectrum(client, ref, split)
        if ref_rows:
            tables[REFERENCE_ROLE] = ref_rows
    return tables


def role_tables(
    client: MlflowClient, runs: Sequence[Run], split: str = "test"
) -> dict[str, list[dict]]:
    """``{role: rows}`` of ``split`` for every run of ``runs`` with a ``robustmsa.role`` (the
    reference and the models of a ``compare_models`` study), in the order of ``runs``; runs
    that logged no such rows are left out."""
    out = {}
    for run in runs:
        role = run.data.tags.get(ROLE_TAG)
        if role:
            rows = run_spectrum(client, run.info.run_id, split)
            if rows:
                out[role] = rows
    return out


def curve_summary(
    tables: Mapping[str, Sequence[Mapping] | None],
    metric: str = "mae",
    *,
    exclude: Sequence[str] = ("grid",),
) -> pd.DataFrame:
    """A table of each curve's trapezoid mean of ``metric`` (``<protocol>/<modalities>``, from
    `robustmsa.evaluation.summaries.summarize`) and each point set's mean (``patterns``,
    ``random``): one row per curve or point set, one column per entry of ``tables``
    (``{label: rows}``, None entries skipped), plus a first row ``spectrum_score`` (the search
    objective, over every protocol of the rows) when ``metric`` is ``mae``. Protocols of
    ``exclude`` get no rows (the ``grid``'s curves are its heat maps). Shape
    ``(curves + 1, labels)``."""
    from robustmsa.evaluation.summaries import spectrum_score, summarize

    suffix = f"/mean_{metric}"
    columns = {}
    for label, rows in tables.items():
        if not rows:
            continue
        found = summarize(rows)
        column = {
            k.removeprefix("robust/").removesuffix(suffix): v
            for k, v in found.items()
            if k.endswith(suffix) and k.split("/")[1] not in exclude
        }
        if metric == "mae":
            column = {"spectrum_score": spectrum_score(rows), **column}
        columns[label] = column
    frame = pd.DataFrame(columns)
    frame.index.name = "curve"
    return frame


def study_scores(parent: Run) -> dict[str, float]:
    """The validation spectrum scores the study logged on its parent: ``best`` (the selected
    trial's), ``reference`` and ``oracle``, those present."""
    metrics = parent.data.metrics
    names = {"best": SEARCH_METRIC, "reference": f"reference/{OBJECTIVE}"}
    names["oracle"] = f"oracle/{OBJECTIVE}"
    return {k: metrics[m] for k, m in names.items() if m in metrics}


def excess_rows(rows: Sequence[Mapping], oracle_rows: Sequence[Mapping]) -> list[dict]:
    """``rows`` with each value minus the oracle's at the same point and metric (how far from
    the ceiling); points the oracle lacks are left out. Same row fields as ``rows``."""
    ceiling = {
        (r["protocol"], r["modalities"], round(float(r["level"]), 6), r["metric"]): r["value"]
        for r in oracle_rows
    }
    out = []
    for r in rows:
        key = (r["protocol"], r["modalities"], round(float(r["level"]), 6), r["metric"])
        if key in ceiling:
            out.append({**r, "value": float(r["value"]) - float(ceiling[key])})
    return out


def model_comparison_table(
    client: MlflowClient,
    parent: Run,
    summaries: Sequence[str] = ("spectrum_mae", "oracle_excess_mae", "clean_mae"),
) -> pd.DataFrame:
    """The ``compare_models`` study's comparison table (``comparison/models.parquet`` of its
    parent: ``split, model, summary, value``) as one row per model, columns ``(split,
    summary)`` for ``summaries`` (all of them when empty), models in the study's order (the
    oracle last). Shape ``(models, splits x summaries)``. `RobustMSAError` when the run has
    no comparison (not a finished ``compare_models`` study)."""
    import pyarrow.parquet as pq

    run_id = parent.info.run_id
    listed = {a.path for a in client.list_artifacts(run_id, COMPARISON_TABLE.rsplit("/", 1)[0])}
    if COMPARISON_TABLE not in listed:
        raise RobustMSAError(
            f"run {run_id} has no {COMPARISON_TABLE}: not a finished compare_models study "
            f"(search.kind is {study_kind(parent)!r})"
        )
    with tempfile.TemporaryDirectory(prefix="robustmsa-analysis-") as tmp:
        long = pq.read_table(client.download_artifacts(run_id, COMPARISON_TABLE, tmp)).to_pandas()
    if summaries:
        long = long[long["summary"].isin(summaries)]
    models = list(dict.fromkeys(long["model"]))
    models = [m for m in models if m != ORACLE_MODEL] + [m for m in models if m == ORACLE_MODEL]
    splits = list(dict.fromkeys(long["split"]))
    order = list(summaries) or list(dict.fromkeys(long["summary"]))
    wide = long.pivot_table(index="model", columns=["split", "summary"], values="value")
    columns = [(s, k) for s in splits for k in order if (s, k) in wide.columns]
    return wide.reindex(index=models, columns=pd.MultiIndex.from_tuples(columns))


def logged_images(client: MlflowClient, run_id: str, folder: str) -> dict[str, bytes]:
    """The PNG files a run logged under ``folder`` (e.g. ``comparison`` or
    ``figures/test``), by file name, sorted; empty when there are none."""
    try:
        listed = sorted(a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir)
    except (MlflowException, OSError):
        return {}
    out = {}
    with tempfile.TemporaryDirectory(prefix="robustmsa-analysis-") as tmp:
        for path in listed:
            if path.endswith(".png"):
                out[path.rsplit("/", 1)[-1]] = Path(
                    client.download_artifacts(run_id, path, tmp)
                ).read_bytes()
    return out


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib Figures with their own canvas, never pyplot: robustmsa.evaluation.figures)


def spectrum_curves_figure(
    tables: Mapping[str, Sequence[Mapping] | None],
    protocol: str,
    *,
    oracle: Sequence[Mapping] | None = None,
    metric: str = "mae",
    split: str = "test",
    scopes: Sequence[str] | None = None,
) -> Figure:
    """One panel per modality scope of the curve ``protocol`` (``missing``, ``noise``,
    ``joint``): a line per entry of ``tables`` (``{label: rows}``, e.g. the trial and the
    reference model; None entries skipped), the oracle's curve dashed in black. ``scopes``:
    the panels (all scopes of the first table by default). ValueError when no table has the
    curve."""
    from robustmsa.evaluation.figures import METRIC_LABELS

    series = {label: curve_series(rows, protocol, metric) for label, rows in tables.items() if rows}
    ceiling = curve_series(oracle, protocol, metric) if oracle else {}
    found = list(dict.fromkeys(s for curves in series.values() for s in curves))
    panels = list(scopes) if scopes else found
    if not panels:
        raise ValueError(f"no {protocol} curve of {metric!r} in the tables {list(tables)}")
    cols = min(len(panels), 4)
    nrows = math.ceil(len(panels) / cols)
    size = (3.6 * cols, 3.2 * nrows + 0.6) if len(panels) > 1 else (6.4, 4.4)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, cols, sharey=True, squeeze=False).ravel()
    for ax, scope in zip(axes, panels, strict=False):
        for i, (label, curves) in enumerate(series.items()):
            if scope in curves:
                levels, values = curves[scope]
                ax.plot(levels, values, marker="o", markersize=3, color=f"C{i}", label=label)
        if scope in ceiling:
            levels, values = ceiling[scope]
            ax.plot(levels, values, linestyle="--", color="black", label=ORACLE_LABEL)
        ax.set_title(scope)
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel(X_LABELS.get(protocol, "level"))
        ax.grid(True, alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(METRIC_LABELS.get(metric, metric))
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{protocol} curves: {metric} on the {split} split")
    return fig


def heatmap_figures(
    rows: Sequence[Mapping], *, metric: str = "mae", split: str = "test", title: str = ""
) -> list[Figure]:
    """One λ x η heat map per modality of the ``grid`` rows of ``rows`` (`heatmap_figure`,
    unsaved); ``title`` prefixes each figure's title. Empty when there is no grid."""
    grid = [r for r in rows if r["protocol"] == "grid" and r["metric"] == metric]
    figures = []
    for modality in grid_modalities(grid):
        lambdas, etas, values = grid_matrix(grid, modality, metric)
        fig = heatmap_figure(modality, lambdas, etas, values, metric=metric, split=split)
        if title:
            ax = fig.axes[0]
            ax.set_title(f"{title}: {ax.get_title()}", fontsize="medium")
        figures.append(fig)
    return figures


def score_history_figure(
    history: pd.DataFrame,
    *,
    reference: float | None = None,
    oracle: float | None = None,
    x: str = "elapsed_s",
) -> Figure:
    """The trials' scores over time (``x`` = ``elapsed_s``, seconds since the study started)
    or over epochs (``x`` = ``step``), from `score_history`: a line per trial, completed
    trials solid, pruned ones dotted and ending in a cross; the reference model's and the
    oracle's scores as horizontal lines when given."""
    fig = Figure(figsize=(8.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for i, (trial_id, points) in enumerate(history.groupby("trial_id", sort=False)):
        points = points.sort_values("step")
        pruned = points["outcome"].iloc[0] == PRUNED
        color = f"C{i % 10}"
        ax.plot(
            points[x],
            points["value"],
            linestyle=":" if pruned else "-",
            marker="o",
            markersize=3,
            color=color,
            label=f"{trial_id} ({points['outcome'].iloc[0] or 'running'})",
        )
        if pruned:
            ax.plot(points[x].iloc[-1], points["value"].iloc[-1], "x", color=color, ms=9)
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="-.", label=f"reference {reference:.4f}")
    if oracle is not None:
        ax.axhline(oracle, color="black", linestyle="--", label=f"{ORACLE_LABEL} {oracle:.4f}")
    metric = history["metric"].iloc[0] if len(history) else OBJECTIVE
    ax.set_xlabel("seconds since the study started" if x == "elapsed_s" else "epoch")
    ax.set_ylabel(f"{metric} (lower is better)")
    ax.set_title("trials' validation scores" + (" over time" if x == "elapsed_s" else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", ncols=2)
    return fig


def param_effects_figure(
    trials: pd.DataFrame, space: Sequence[ParamSpace], *, reference: float | None = None
) -> Figure:
    """One panel per searched parameter: each trial's score against the value it drew
    (completed filled, pruned hollow; a log axis for a log-scale parameter), the reference
    model's score as a horizontal line when given. ValueError for an empty ``space``."""
    if not space:
        raise ValueError("the study searched no parameter")
    cols = min(len(space), 4)
    nrows = math.ceil(len(space) / cols)
    fig = Figure(figsize=(3.6 * cols, 3.2 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, cols, sharey=True, squeeze=False).ravel()
    for ax, p in zip(axes, space, strict=False):
        for outcome, style in ((COMPLETED, {"color": "C0"}), (PRUNED, {"facecolors": "none"})):
            shown = trials[trials["outcome"] == outcome]
            x = shown[p.name] if p.type != "categorical" else shown[p.name].astype(str)
            ax.scatter(x, shown["score"], edgecolors="C0", label=outcome, **style)
        if reference is not None:
            ax.axhline(reference, color="grey", linestyle="-.", label="reference")
        bounds = _bounds(p, space)
        if p.log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        elif p.type == "int":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if bounds:  # the searched range, so that one sees where in it the trials fell
            low, high = bounds
            pad = (high / low) ** 0.05 if p.log else (high - low) * 0.05 or 0.5
            ax.set_xlim(*((low / pad, high * pad) if p.log else (low - pad, high + pad)))
        ax.set_xlabel(p.name.rsplit(".", 1)[-1])
        ax.grid(True, alpha=0.3)
    for ax in axes[len(space) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(f"{SEARCH_METRIC} (lower is better)")
    axes[0].legend(fontsize="small")
    fig.suptitle("parameter effects: each trial's score against its parameters")
    return fig


def _bounds(p: ParamSpace, space: Sequence[ParamSpace]) -> tuple[float, float] | None:
    """``p``'s searched range; a bound naming another parameter takes that one's upper bound."""
    if p.type == "categorical":
        return None
    high = p.high
    if isinstance(high, str):
        named = [q.high for q in space if q.name == high and not isinstance(q.high, str)]
        if not named:
            return None
        high = named[0]
    return float(p.low), float(high)


def importance_figure(importances: Importances) -> Figure:
    """A horizontal bar per parameter (`param_importances`), the most important on top; the
    notes as the figure's caption, and only them when there is nothing to draw."""
    fig = Figure(figsize=(7.0, 0.5 * max(len(importances.values), 2) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    values = importances.values.iloc[::-1]
    if len(values):
        ax.barh([n.rsplit(".", 1)[-1] for n in values.index], values.to_numpy(), color="C0")
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    else:
        ax.set_axis_off()
    ax.set_title(f"parameter importance over {importances.completed} completed trial(s)")
    if importances.notes:
        lines = [textwrap.fill(n, 100) for n in importances.notes]
        fig.supxlabel("\n".join(lines), fontsize="x-small", ha="left", x=0.01)
    return fig


def oracle_gap_figure(table: pd.DataFrame, summary: str = "oracle_excess_mae") -> Figure:
    """Grouped bars of ``summary`` (the excess over the oracle's spectrum MAE by default) per
    model and split, from `model_comparison_table`; models without it (the oracle) left out."""
    splits = [s for s, k in table.columns if k == summary]
    if not splits:
        raise ValueError(f"the table has no {summary!r} column")
    data = table[[(s, summary) for s in splits]].dropna(how="all")
    fig = Figure(figsize=(max(6.0, 1.1 * len(data) + 2.0), 4.4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(data))
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, data[(split, summary)], width, label=split)
    ax.set_xticks(x, list(data.index), rotation=30, ha="right")
    ax.set_ylabel(f"{summary} (lower is better)")
    ax.set_title("each model's distance from the Bayes oracle")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def curve_protocols(rows: Sequence[Mapping]) -> list[str]:
    """The curve protocols of ``rows`` (`CURVE_PROTOCOLS` order)."""
    present = {r["protocol"] for r in rows}
    return [p for p in CURVE_PROTOCOLS if p in present]


# ---------------------------------------------------------------------------------------------
# Notebooks


def short_errors() -> None:
    """In IPython (a notebook's kernel), show a `RobustMSAError` as its one-line message
    (``RobustMSAError: experiment 'X' has no study runs in ...``) instead of a traceback; the
    cell still fails, so a notebook run stops there with a non-zero exit. Elsewhere, nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def one_line(shell, etype, value, tb, tb_offset=None):
        shell.showtraceback((etype, value, tb), exception_only=True)

    shell.set_custom_exc((RobustMSAError,), one_line)
