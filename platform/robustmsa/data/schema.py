"""The Parquet schema of a robustmsa dataset, defined here and nowhere else.

A dataset is a directory holding ``train.parquet``, ``valid.parquet`` and ``test.parquet``.
One row per sample:

- ``id`` (string), ``label`` (float32);
- per modality ``m`` in ``text, audio, vision``: ``m`` (list of frames, each a fixed-size list
  of ``d_m`` float32), ``m_length`` (int32, number of frames) and ``m_present`` (bool: the
  modality exists for this sample; an absent modality has zero frames);
- optional (listed in the metadata's ``optional_columns``): ``text_ids`` (list of int32 token
  ids, e.g. BERT ids with ``[CLS]``/``[SEP]``) and ``raw_text`` (string).

Dataset-level metadata sits in the Parquet schema metadata under the key ``robustmsa`` as JSON:
name, feature dims, label range, source, the dataset's digest and each split's content digest,
and the train-split per-feature mean and std used to standardise features.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from robustmsa.data.batch import MODALITIES

SPLITS: tuple[str, ...] = ("train", "valid", "test")
OPTIONAL_COLUMNS: tuple[str, ...] = ("text_ids", "raw_text")
METADATA_KEY = b"robustmsa"


@dataclass
class DatasetMeta:
    """Metadata shared by the splits of one dataset.

    ``feature_mean[m]`` and ``feature_std[m]`` have ``dims[m]`` entries each, computed on the
    valid frames of the train split.
    """

    name: str
    dims: dict[str, int]
    label_range: tuple[float, float]
    source: str
    digest: str = ""
    feature_mean: dict[str, list[float]] = field(default_factory=dict)
    feature_std: dict[str, list[float]] = field(default_factory=dict)
    optional_columns: list[str] = field(default_factory=list)
    # Per split, the digest of its content (`robustmsa.data.content_digest`), checked by the
    # reader; empty for a dataset written before they existed.
    content_digests: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> DatasetMeta:
        data = json.loads(raw)
        data["label_range"] = tuple(data["label_range"])
        return cls(**data)


def arrow_schema(meta: DatasetMeta) -> pa.Schema:
    """The Arrow schema of one split, carrying ``meta`` as schema metadata."""
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("label", pa.float32())]
    for m in MODALITIES:
        frame = pa.list_(pa.float32(), meta.dims[m])
        fields += [
            pa.field(m, pa.list_(frame)),
            pa.field(f"{m}_length", pa.int32()),
            pa.field(f"{m}_present", pa.bool_()),
        ]
    if "text_ids" in meta.optional_columns:
        fields.append(pa.field("text_ids", pa.list_(pa.int32())))
    if "raw_text" in meta.optional_columns:
        fields.append(pa.field("raw_text", pa.string()))
    return pa.schema(fields, metadata={METADATA_KEY: meta.to_json()})
