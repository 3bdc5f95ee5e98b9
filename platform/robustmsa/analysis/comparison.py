"""A ``compare_models`` study's comparison table (`robustmsa.search.kinds.compare_models`), read
back from its parent run as one row per model."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from robustmsa.analysis.names import COMPARISON_TABLE, ORACLE_MODEL
from robustmsa.analysis.studies import study_kind
from robustmsa.errors import RobustMSAError


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
            f"(study.kind is {study_kind(parent)!r})"
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
