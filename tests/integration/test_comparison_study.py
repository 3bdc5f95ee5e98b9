"""The compare_models study kind, whole and embedded: the session's smoke comparison
(`studies/model_comparison.py --smoke-test`, local Ray, sqlite MLflow; tests/smoke_studies.py),
read, not rerun: every model of the project, the reference and the ablation, 2 epochs on the
tiny preset."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from paths import REPO
from robustmsa.config import load
from robustmsa.evaluation.floor import FLOOR, logged_floor
from robustmsa.evaluation.summaries import spectrum_score
from robustmsa.search.kinds.compare_models import ORACLE, point_rows
from robustmsa.search.trial import ROLE_TAG
from robustmsa.tracking.spectrum import metric_key

pytestmark = pytest.mark.integration

STUDY = REPO / "studies" / "configs" / "model_comparison.yaml"
MODELS = {"qa_moe", "qa_moe-no-quality-gate", "derl", "promma", "mult"}  # model_comparison.yaml


def test_compare_models_study_logs_each_model_on_both_splits(smoke_comparison, tmp_path):
    client = MlflowClient(smoke_comparison.tracking_uri)
    exp = client.get_experiment_by_name(smoke_comparison.experiment)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    roles = {c.data.tags[ROLE_TAG]: c for c in children}
    assert set(roles) == MODELS | {"reference"}
    assert all(c.info.status == "FINISHED" for c in children)
    assert roles["qa_moe-no-quality-gate"].data.params["model.params.quality_gate"] == "False"
    assert roles["reference"].data.params["model.name"] == "late_fusion"
    protocols = load(STUDY).spectrum.protocols  # --smoke-test keeps them
    metrics = parent.data.metrics
    for role, run in roles.items():
        # Each split's figure is the model's own logged evaluation, not a new one.
        for split, prefix in (("valid", ""), ("test", "test/")):
            local = client.download_artifacts(
                run.info.run_id, f"spectrum/spectrum_{split}.parquet", str(tmp_path / role)
            )
            rows = point_rows(pq.read_table(local).to_pylist(), protocols)
            assert metrics[f"compare/{split}/{role}/spectrum_mae"] == pytest.approx(
                spectrum_score(rows), rel=1e-12
            )
            assert run.data.metrics[f"{prefix}spectrum/clean/all/mae"] == pytest.approx(
                metrics[f"compare/{split}/{role}/clean_mae"], rel=1e-12
            )
            excess = metrics[f"compare/{split}/{role}/oracle_excess_mae"]
            assert excess == pytest.approx(
                metrics[f"compare/{split}/{role}/spectrum_mae"]
                - metrics[f"compare/{split}/{ORACLE}/spectrum_mae"]
            )
            assert excess > 0  # the Bayes oracle is the ceiling on the same inputs
    local = client.download_artifacts(
        parent.info.run_id, "comparison/models.parquet", str(tmp_path / "parent")
    )
    table = pq.read_table(local).to_pylist()
    assert {(r["split"], r["model"]) for r in table} == {
        (split, model)
        for split in ("valid", "test")
        for model in MODELS | {"reference", ORACLE, FLOOR}
    }
    # The floor: the training median, the same MAE at every point, so its spectrum MAE is it.
    floor = logged_floor(client, parent.info.run_id)
    for split in ("valid", "test"):
        assert metrics[f"compare/{split}/{FLOOR}/spectrum_mae"] == pytest.approx(
            floor[split]["mae"], rel=1e-6
        )
    for r in table:  # the table holds what the parent logged
        key = metric_key(f"compare/{r['split']}/{r['model']}/{r['summary']}")
        assert metrics[key] == pytest.approx(r["value"], rel=1e-12), key
    figures = {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    for split in ("valid", "test"):
        assert f"comparison/{split}_missing_all_mae.png" in figures
    # The printed summary: model, valid MAE, excess, test MAE, excess.
    line = next(ln for ln in smoke_comparison.stdout.splitlines() if ln.split()[:1] == ["derl"])
    assert line.split()[3] == f"{metrics['compare/test/derl/spectrum_mae']:.4f}"
