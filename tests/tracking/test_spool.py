"""Writes that outlive a tracking outage: spooled in order, then replayed, nothing lost.

The outage is real: a client pointed at a loopback port nobody listens on, with MLflow's own
retries cut to none so that the test does not wait them out. The writes are then replayed
into a real store holding the same run.
"""

from __future__ import annotations

import socket

import pandas as pd
import pytest
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from robustmsa.cli import main
from robustmsa.tracking.spool import SpoolingClient, is_outage, pending, sync


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store_client(tmp_path_factory):
    """One sqlite store for the module (creating one takes seconds); a fresh run per test."""
    where = tmp_path_factory.mktemp("spool-store")
    client = MlflowClient(f"sqlite:///{where / 'mlruns.db'}")
    experiment = client.create_experiment("e", artifact_location=(where / "art").as_uri())
    return client, experiment


@pytest.fixture
def store(store_client):
    client, experiment = store_client
    return client, client.create_run(experiment).info.run_id


@pytest.fixture
def down(tmp_path, monkeypatch):
    """A client whose server is down, spooling to ``tmp_path/spool``."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    return SpoolingClient(f"http://127.0.0.1:{closed_port()}", spool_dir=tmp_path / "spool")


def write_everything(client, run_id: str, tmp_path) -> None:
    client.log_batch(
        run_id,
        metrics=[Metric("val/mae", 0.5, 1000, 1), Metric("val/mae", 0.4, 2000, 2)],
        params=[Param("training.lr", "0.001")],
        tags=[RunTag("robustmsa.trial_id", "t1")],
    )
    client.log_metric(run_id, "time/epoch_s", 1.5, step=2)
    client.set_tag(run_id, "robustmsa.outcome", "completed")
    client.log_text(run_id, "a: 1\n", "best_config.yaml")
    client.log_table(run_id, pd.DataFrame({"level": [0.0, 0.5], "mae": [0.4, 0.9]}), "t.json")
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    (scratch / "state.json").write_text('{"epoch": 2}')
    client.log_artifacts(run_id, str(scratch), artifact_path="checkpoint")
    (scratch / "state.json").unlink()  # the caller's temporary copy is gone: the spool kept one
    client.set_terminated(run_id, "FINISHED")


def test_writes_during_an_outage_are_spooled_then_replayed_in_full(store, down, tmp_path):
    client, run_id = store
    write_everything(down, run_id, tmp_path)
    assert down.spooled == 7
    assert len(pending(tmp_path / "spool")) == 1
    assert client.get_run(run_id).info.status == "RUNNING"  # nothing reached the store

    assert sync(tmp_path / "spool", client) == 7
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"training.lr": "0.001"}
    assert run.data.tags["robustmsa.outcome"] == "completed"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/mae")] == [
        (1, 0.5), (2, 0.4)
    ]  # fmt: skip
    assert run.data.metrics["time/epoch_s"] == 1.5
    paths = {a.path for a in client.list_artifacts(run_id)}
    assert {"best_config.yaml", "t.json", "checkpoint"} <= paths
    assert [a.path for a in client.list_artifacts(run_id, "checkpoint")] == [
        "checkpoint/state.json"
    ]
    assert pending(tmp_path / "spool") == []  # replayed spools are gone
    assert sync(tmp_path / "spool", client) == 0


def test_a_replay_that_stops_resumes_where_it_stopped(store, down, tmp_path, monkeypatch):
    client, run_id = store
    write_everything(down, run_id, tmp_path)

    def server_gone(self, *args, **kwargs):  # the server goes away again at the third write
        raise ConnectionError("down again")

    original = MlflowClient.set_tag
    monkeypatch.setattr(MlflowClient, "set_tag", server_gone)
    with pytest.raises(ConnectionError):
        sync(tmp_path / "spool", client)
    monkeypatch.setattr(MlflowClient, "set_tag", original)
    assert sync(tmp_path / "spool", client) == 5  # the two before it are not replayed twice
    assert len(client.get_metric_history(run_id, "val/mae")) == 2


def test_later_writes_queue_behind_a_spooled_one(store, tmp_path, monkeypatch):
    """Once a client spools, it keeps spooling, so that a run's writes keep their order even
    when the server answers again meanwhile."""
    client, run_id = store
    spooling = SpoolingClient(client.tracking_uri, spool_dir=tmp_path / "spool")
    original = MlflowClient.set_tag

    def outage(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("connection refused")

    monkeypatch.setattr(MlflowClient, "set_tag", outage)
    spooling.set_tag(run_id, "robustmsa.outcome", "completed")
    monkeypatch.setattr(MlflowClient, "set_tag", original)  # the server is back
    spooling.set_terminated(run_id, "FINISHED")
    assert spooling.spooled == 2
    assert client.get_run(run_id).info.status == "RUNNING"
    assert sync(tmp_path / "spool", client) == 2
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["robustmsa.outcome"] == "completed"


def test_other_errors_are_not_an_outage(store, tmp_path):
    client, _ = store
    spooling = SpoolingClient(client.tracking_uri, spool_dir=tmp_path / "spool")
    with pytest.raises(Exception) as err:
        spooling.set_tag("0" * 32, "a", "1")  # no such run: the caller's mistake
    assert not is_outage(err.value)
    assert pending(tmp_path / "spool") == []


def test_the_sync_command_replays_a_spool_left_behind(store, down, tmp_path, capsys):
    client, run_id = store
    down.set_tag(run_id, "robustmsa.outcome", "completed")
    rc = main(["tracking", "sync", "--spool", str(tmp_path / "spool"),
               "--tracking-uri", client.tracking_uri])  # fmt: skip
    assert rc == 0
    assert "replayed 1 writes from 1 spool files" in capsys.readouterr().out
    assert client.get_run(run_id).data.tags["robustmsa.outcome"] == "completed"
