"""Dataset provenance: log a dataset directory to an MLflow run as an input.

The MLflow dataset carries the name, the content digest, the source and the split sizes, so a
run says exactly which data trained it (MLflow UI: the run's "Datasets used").
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient

from robustmsa.data.schema import METADATA_KEY, SPLITS, DatasetMeta
from robustmsa.errors import DataError


def describe_dataset(root: Path) -> dict:
    """Name, digest, source, dims, label range and split sizes, read from the Parquet footers
    only (no feature data is read)."""
    sizes, meta = {}, None
    for split in SPLITS:
        path = root / f"{split}.parquet"
        try:
            footer = pq.ParquetFile(path)
            sizes[split] = footer.metadata.num_rows
            meta = meta or DatasetMeta.from_json(footer.schema_arrow.metadata[METADATA_KEY])
        except (pa.ArrowException, OSError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: unreadable Parquet footer or metadata ({exc})") from exc
    return {
        "name": meta.name,
        "digest": meta.digest,
        "source": meta.source,
        "dims": meta.dims,
        "label_range": list(meta.label_range),
        "split_sizes": sizes,
        "path": str(root.resolve()),
    }


def log_dataset_input(client: MlflowClient, run_id: str, root: Path, context: str) -> dict:
    """Log the dataset at ``root`` as an input of ``run_id`` (``context``: e.g. ``training``)."""
    info = describe_dataset(root)
    dataset = Dataset(
        name=info["name"],
        digest=info["digest"],
        source_type="local",
        source=json.dumps({"uri": info["path"], "origin": info["source"]}),
        schema=json.dumps({"dims": info["dims"], "label_range": info["label_range"]}),
        profile=json.dumps({"split_sizes": info["split_sizes"]}),
    )
    client.log_inputs(
        run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
    )
    return info
