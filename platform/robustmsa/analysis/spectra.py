"""The spectrum rows runs logged (lists of dicts, `robustmsa.evaluation.spectrum`'s long form:
``protocol, modalities, level, metric, value, n``): a run's (`run_spectrum`), a trial's with
the reference model's (`trial_tables`), every role's (`role_tables`), the study's Bayes oracle
(`study_oracle`), the distance to the oracle (`excess_rows`), and the curves' means as one
frame (`curve_summary`).

The functions that read tables import `robustmsa.evaluation.report` (which imports torch) when
first called."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from robustmsa.analysis.names import REFERENCE_ROLE, ROLE_TAG, SELECTED_TAG, TRIAL_TAG
from robustmsa.analysis.studies import reference_run_id, selected_run_id
from robustmsa.errors import RobustMSAError


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


def study_floor(parent: Run, split: str = "test") -> dict[str, float]:
    """The constant predictor's metrics on ``split`` (``floor/<split>/<metric>`` of the parent
    run, `robustmsa.evaluation.floor`; real data too), ``{metric: value}``; {} for a study
    that logged none."""
    from robustmsa.evaluation.floor import floors_in

    return floors_in(parent.data.metrics).get(split, {})


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
