"""Datasets: Parquet schema, reader/writer, synthetic generator and the in-memory `Batch`."""

from robustmsa.data.batch import MODALITIES, Batch

__all__ = ["MODALITIES", "Batch"]
