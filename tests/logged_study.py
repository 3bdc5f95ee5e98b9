"""A small study logged to a real sqlite MLflow store the way a study logs (the study config's
params, trials with per-epoch metrics, spectrum tables, the oracle on the parent, a
compare_models parent with its comparison table), for the tests of `robustmsa.analysis`
(tests/analysis/, whose conftest imports the fixtures `store` and `study`).

The store is built once per session, on first use: it takes a few seconds."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from paths import REPO
from robustmsa import analysis
from robustmsa.config import load
from robustmsa.tracking.runs import flatten, log_params
from robustmsa.tracking.spectrum import ORACLE_SOURCE, log_spectrum
from robustmsa.training.checkpoint import ROWS_FILE

LEVELS = (0.0, 0.5, 1.0)
MODALITIES = ("text", "audio")
T0 = 1_700_000_000_000  # the study's start, epoch ms


def spectrum(offset: float, *, grid: bool = True) -> list[dict]:
    """A small spectrum table: clean, missing and noise curves on ``all`` and ``text``, two
    patterns, and a 3 x 3 grid per modality; values ``offset + level``."""
    rows = []
    for metric in ("mae", "corr"):

        def row(protocol, modalities, level, value, metric=metric):
            return dict(
                protocol=protocol,
                modalities=modalities,
                level=level,
                metric=metric,
                value=value,
                n=10,
            )

        rows.append(row("clean", "all", 0.0, offset))
        for protocol in ("missing", "noise"):
            for scope in ("all", "text"):
                rows += [row(protocol, scope, lv, offset + lv) for lv in LEVELS]
        rows += [row("patterns", p, 0.0, offset + 0.3) for p in ("text", "text+audio")]
        if grid:
            for m in MODALITIES:
                for eta in LEVELS:
                    rows += [
                        row("grid", f"{m}/eta={eta:.2f}", lam, offset + lam + eta) for lam in LEVELS
                    ]
    return rows


def log_history(client, run_id, key, values, start_ms):
    """``values[i]`` at epoch ``i + 1``, one second apart from ``start_ms``."""
    client.log_batch(
        run_id,
        metrics=[Metric(key, v, start_ms + 1000 * (i + 1), i + 1) for i, v in enumerate(values)],
    )


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("search", str(root / "artifacts"))
    config = load(REPO / "studies" / "configs" / "qa_moe_search.yaml")
    params = flatten(config.to_dict())

    older = client.create_run(exp, start_time=T0 - 10_000, tags={"robustmsa.study": "s"})
    parent = client.create_run(exp, start_time=T0, tags={"robustmsa.study": "s"}).info.run_id
    log_params(client, parent, params)
    log_spectrum(client, parent, spectrum(0.1), split="valid", source=ORACLE_SOURCE, figures=False)
    log_spectrum(client, parent, spectrum(0.1), split="test", source=ORACLE_SOURCE, figures=False)

    def child(trial_id, start, tags=(), drawn=None):
        tags = {"mlflow.parentRunId": parent, "robustmsa.trial_id": trial_id, **dict(tags)}
        run = client.create_run(exp, start_time=start, tags=tags, run_name=f"trial_{trial_id}")
        log_params(client, run.info.run_id, {**params, **(drawn or {})})
        return run.info.run_id

    reference = child("ref0", T0 + 100, {"robustmsa.role": "reference"})
    log_spectrum(client, reference, spectrum(0.7), split="test", figures=False)
    drawn_a = {
        "model.params.num_experts": 4,
        "model.params.top_k": 3,
        "model.params.uncertainty_weight": 0.05,
        "training.lr": 0.002,
    }
    drawn_b = {**drawn_a, "model.params.num_experts": 6, "model.params.top_k": 5}
    completed = child("aaaa", T0 + 1000, {"robustmsa.outcome": "completed"}, drawn_a)
    pruned = child("bbbb", T0 + 2000, {"robustmsa.outcome": "pruned"}, drawn_b)
    log_history(client, completed, "val/spectrum_score", [0.9, 0.8, 0.85], T0 + 1000)
    log_history(client, completed, "best/val/spectrum_score", [0.9, 0.8, 0.8], T0 + 1000)
    log_history(client, pruned, "val/spectrum_score", [1.2], T0 + 2500)
    log_history(client, pruned, "best/val/spectrum_score", [1.2], T0 + 2500)
    client.set_tag(completed, "robustmsa.epochs_run", "3")
    client.set_tag(pruned, "robustmsa.epochs_run", "1")
    for run_id in (completed, pruned, reference):
        client.set_terminated(run_id, end_time=T0 + 9000)
    log_spectrum(client, completed, spectrum(0.5, grid=False), split="valid", figures=False)
    log_spectrum(client, completed, spectrum(0.6), split="test", figures=False)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / ROWS_FILE).write_text(json.dumps(spectrum(0.9, grid=False)))
        client.log_artifacts(pruned, tmp, artifact_path="checkpoint")
    client.log_batch(
        parent,
        metrics=[
            Metric("best/val/spectrum_score", 0.8, T0, 0),
            Metric("reference/val/spectrum_score", 0.75, T0, 0),
            Metric("oracle/val/spectrum_score", 0.2, T0, 0),
            Metric("floor/test/mae", 1.3, T0, 0),  # the constant predictor's, as a study logs it
            Metric("floor/test/acc7", 0.2, T0, 0),
        ],
    )
    client.set_tag(parent, "robustmsa.selected_run_id", completed)
    client.set_tag(parent, "robustmsa.reference_run_id", reference)
    client.set_tag(parent, "robustmsa.best_trial", "aaaa")
    client.create_run(exp, tags={"mlflow.parentRunId": parent})  # a run that is no trial
    client.create_experiment("empty", str(root / "artifacts"))

    # A compare_models study: its table as the study logs it.
    from robustmsa.search.kinds.compare_models import log_summary_table, summary_table

    compare_exp = client.create_experiment("compare", str(root / "artifacts"))
    compare = client.create_run(compare_exp, tags={"robustmsa.study": "c"}).info.run_id
    log_params(client, compare, {"study.kind": "compare_models", "search.space": "[]"})
    table = []
    for split in ("valid", "test"):
        # the study's own point rows: its spectrum.protocols, no grid
        by_model = {"reference": spectrum(0.7, grid=False), "qa_moe": spectrum(0.4, grid=False)}
        table += summary_table(by_model, split, spectrum(0.1, grid=False))
    log_summary_table(client, compare, table, {})
    return dict(
        uri=uri,
        root=root,
        client=client,
        config=config,
        older=older.info.run_id,
        parent=parent,
        reference=reference,
        completed=completed,
        pruned=pruned,
        compare=compare,
    )


@pytest.fixture(scope="session")
def study(store):
    return analysis.find_study(store["client"], "search")
