"""Selection reads only validation: the test split cannot change what training chooses.

Fault injection: a copy of the dataset whose test split holds other labels and other features
(its metadata, digest included, unchanged, so every random stream is the same) must give the
identical training outcome: scores, best epoch, validation rows and weights. The test split is
then evaluated once per run, by `evaluate_test_once`, which refuses a second evaluation.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient
from robustmsa.data.content_digest import table_digest
from robustmsa.data.schema import METADATA_KEY
from robustmsa.errors import RobustMSAError
from robustmsa.evaluation.logged import TEST_TAG, evaluate_split, evaluate_test_once
from robustmsa.evaluation.logged import load_checkpoint as load_trained
from robustmsa.models.base import MSAModel
from robustmsa.training.checkpoint import BEST_MODEL_FILE, load_weights
from tiny_training import tiny_config, train


def _scramble_test_split(root):
    """Other labels and features in ``root/test.parquet``; schema and metadata kept, but for
    the test split's content digest, which the new content gets in every split's metadata (as
    a writer would record it: the reader refuses content that differs from it)."""
    path = root / "test.parquet"
    table = pq.read_table(path)
    rng = np.random.default_rng(123)
    labels = rng.uniform(-3, 3, table.num_rows).astype(np.float32)
    table = table.set_column(
        table.schema.get_field_index("label"), table.schema.field("label"), pa.array(labels)
    )
    col = table.column("text").combine_chunks()
    flat = col.values.flatten().to_numpy()
    frames = pa.FixedSizeListArray.from_arrays(
        pa.array(rng.standard_normal(len(flat)).astype(np.float32)), col.type.value_type.list_size
    )
    table = table.set_column(
        table.schema.get_field_index("text"),
        table.schema.field("text"),
        pa.ListArray.from_arrays(col.offsets, frames),
    )
    content = table_digest("test", table)
    for split in ("train", "valid", "test"):
        target = root / f"{split}.parquet"
        source = table if split == "test" else pq.read_table(target)
        meta = json.loads(source.schema.metadata[METADATA_KEY])
        meta["content_digests"]["test"] = content
        pq.write_table(source.replace_schema_metadata({METADATA_KEY: json.dumps(meta)}), target)


def test_the_test_split_cannot_change_training_or_selection(tiny_dataset, tmp_path):
    other = tmp_path / "scrambled"
    shutil.copytree(tiny_dataset, other)
    _scramble_test_split(other)
    assert pq.read_table(other / "test.parquet").column("label") != pq.read_table(
        tiny_dataset / "test.parquet"
    ).column("label")

    a, rep_a = train(tiny_config(tiny_dataset), tmp_path / "a")
    b, rep_b = train(tiny_config(other), tmp_path / "b")
    assert [h["best/val/spectrum_score"] for h in rep_a.history] == [
        h["best/val/spectrum_score"] for h in rep_b.history
    ]
    assert (a.best_epoch, a.best_score, a.rows) == (b.best_epoch, b.best_score, b.rows)
    wa = load_weights(rep_a.checkpoints[-1])
    wb = load_weights(rep_b.checkpoints[-1])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # ... while the test split itself does differ: the evaluation sees it.
    test_a = evaluate_split(load_trained(rep_a.checkpoints[-1]), "test", ["clean"])
    test_b = evaluate_split(load_trained(rep_b.checkpoints[-1]), "test", ["clean"])
    assert test_a != test_b


def test_test_split_is_evaluated_once_per_run(tiny_dataset, tmp_path):
    _, reporter = train(tiny_config(tiny_dataset, epochs=1), tmp_path / "ckpt")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    experiment = client.create_experiment("discipline", str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    rows = evaluate_test_once(client, run_id, reporter.checkpoints[-1], ["clean", "missing"])
    run = client.get_run(run_id)
    assert TEST_TAG in run.data.tags
    clean_mae = next(r["value"] for r in rows if r["protocol"] == "clean" and r["metric"] == "mae")
    assert run.data.metrics["test/spectrum/clean/all/mae"] == pytest.approx(clean_mae)
    assert not any(k.startswith("spectrum/") for k in run.data.metrics)  # valid keys untouched
    with pytest.raises(RobustMSAError, match="already evaluated once"):
        evaluate_test_once(client, run_id, reporter.checkpoints[-1], ["clean"])


def test_a_checkpoint_from_before_the_target_scale_loads_as_the_model_it_was(
    tiny_dataset, tmp_path
):
    """Written before models kept their target scale: it was trained on raw labels, which is
    the identity scale, and loads so. Weights that do not fit the model are refused by name."""
    _, reporter = train(tiny_config(tiny_dataset, epochs=1), tmp_path)
    ckpt = reporter.checkpoints[-1]
    state = torch.load(ckpt / BEST_MODEL_FILE, weights_only=True)
    older = {k: v for k, v in state.items() if k not in MSAModel.neutral_additions}
    torch.save(older, ckpt / BEST_MODEL_FILE)
    model = load_trained(ckpt).model
    assert float(model.target_mean) == 0.0 and float(model.target_std) == 1.0
    assert not bool(model.target_normal_score)  # nor the normal-score link, added later still
    older["variance_heads.text.net.0.weight"] = torch.zeros(3, 3)  # another shape entirely
    torch.save(older, ckpt / BEST_MODEL_FILE)
    with pytest.raises(RobustMSAError, match=rf"{BEST_MODEL_FILE}: does not fit its config"):
        load_trained(ckpt)
