"""Log a spectrum evaluation to MLflow: every point, the summaries and the table itself.

Names (DESIGN §5): ``spectrum/<protocol>/<modalities>/<metric>`` with ``step = round(level*100)``,
so MLflow draws each reliability curve natively; summaries as ``robust/...``; the long-form
table as a Parquet artifact.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from robustmsa.evaluation.summaries import summarize
from robustmsa.tracking.runs import log_metrics


def spectrum_metric_name(row: dict, prefix: str = "spectrum") -> str:
    return f"{prefix}/{row['protocol']}/{row['modalities']}/{row['metric']}"


def log_spectrum(
    client: MlflowClient, run_id: str, rows: list[dict], *, split: str = "valid"
) -> dict[str, float]:
    """Log ``rows`` (long form) and their summaries to ``run_id``; returns the summaries."""
    prefix = "spectrum" if split == "valid" else f"{split}/spectrum"
    points = [(spectrum_metric_name(r, prefix), r["value"], round(r["level"] * 100)) for r in rows]
    summaries = summarize(rows)
    robust_prefix = "" if split == "valid" else f"{split}/"
    log_metrics(client, run_id, points + [(robust_prefix + k, v, 0) for k, v in summaries.items()])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"spectrum_{split}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        client.log_artifact(run_id, str(path), artifact_path="spectrum")
    return summaries
