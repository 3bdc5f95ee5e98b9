"""MLflow logging against a real sqlite tracking store (docs/architecture.md §5).

One store per module (creating its tables takes seconds); every test works in its own
experiment, so tests do not see each other's runs.
"""

from __future__ import annotations

import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from robustmsa.errors import RobustMSAError
from robustmsa.tracking.runs import (
    MAX_METRICS_PER_BATCH,
    end_dangling_runs,
    flatten,
    log_metrics,
    log_params,
    resolve_tracking_uri,
    start_run,
)
from robustmsa.tracking.runs import check_tracking_uri as check_tracking_uri_fn
from robustmsa.tracking.spectrum import log_spectrum

# MLflow's own sqlalchemy store triggers this; it says nothing about robustmsa.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")


class CountingSpy:
    """Wraps the client's real ``log_batch``: counts calls and what they carried."""

    def __init__(self, real):
        self.real = real
        self.calls: list[dict] = []

    def __call__(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        self.calls.append(
            {"metrics": len(list(metrics)), "params": len(list(params)), "tags": len(list(tags))}
        )
        return self.real(run_id, metrics=metrics, params=params, tags=tags, **kwargs)


@pytest.fixture
def spy(client, monkeypatch):
    s = CountingSpy(client.log_batch)
    monkeypatch.setattr(client, "log_batch", s)
    return s


def _row(protocol, mods, level, metric, value):
    return {
        "protocol": protocol,
        "modalities": mods,
        "level": level,
        "metric": metric,
        "value": value,
        "n": 48,
    }


LEVELS = [round(0.1 * i, 1) for i in range(11)]
MISSING_MAE = [1.0 + 0.1 * i * i for i in range(11)]
NOISE_CORR = [0.8 - 0.05 * i for i in range(11)]
SPECTRUM_ROWS = (
    [_row("clean", "all", 0.0, "mae", 0.75), _row("clean", "all", 0.0, "corr", 0.81)]
    + [_row("missing", "all", lv, "mae", v) for lv, v in zip(LEVELS, MISSING_MAE, strict=True)]
    + [_row("noise", "text", lv, "corr", v) for lv, v in zip(LEVELS, NOISE_CORR, strict=True)]
)


def _trapezoid(values, step=0.1):
    return sum((values[i] + values[i + 1]) / 2 * step for i in range(len(values) - 1))


def _history(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_log_spectrum_points_summaries_and_artifact(client, run_id, tmp_path):
    summaries = log_spectrum(client, run_id, SPECTRUM_ROWS)
    steps = list(range(0, 101, 10))
    assert _history(client, run_id, "spectrum/missing/all/mae") == list(
        zip(steps, MISSING_MAE, strict=True)
    )
    assert _history(client, run_id, "spectrum/noise/text/corr") == list(
        zip(steps, NOISE_CORR, strict=True)
    )
    assert _history(client, run_id, "spectrum/clean/all/mae") == [(0, 0.75)]
    assert _history(client, run_id, "spectrum/clean/all/corr") == [(0, 0.81)]

    expected = {
        "robust/missing/all/auilc_mae": _trapezoid(MISSING_MAE),
        "robust/missing/all/mean_mae": _trapezoid(MISSING_MAE) / 1.0,
        "robust/noise/text/auilc_corr": _trapezoid(NOISE_CORR),
        "robust/noise/text/mean_corr": _trapezoid(NOISE_CORR) / 1.0,
        # LNLN's mean over the levels below 1.0, and the worst level (max MAE, min corr).
        "robust/missing/all/ratemean_mae": sum(MISSING_MAE[:10]) / 10,
        "robust/noise/text/ratemean_corr": sum(NOISE_CORR[:10]) / 10,
        "robust/missing/all/worst_mae": MISSING_MAE[10],
        "robust/noise/text/worst_corr": NOISE_CORR[10],
    }
    assert summaries == pytest.approx(expected)
    logged = client.get_run(run_id).data.metrics
    spectrum_keys = {
        "spectrum/clean/all/mae",
        "spectrum/clean/all/corr",
        "spectrum/missing/all/mae",
        "spectrum/noise/text/corr",
    }
    assert set(logged) == spectrum_keys | set(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value)
        assert _history(client, run_id, key)[0][0] == 0

    local = client.download_artifacts(run_id, "spectrum/spectrum_valid.parquet", str(tmp_path))
    table = pq.read_table(local)
    assert table.column_names == ["protocol", "modalities", "level", "metric", "value", "n"]
    assert table.to_pylist() == SPECTRUM_ROWS
    assert [a.path for a in client.list_artifacts(run_id, "spectrum")] == [
        "spectrum/spectrum_valid.parquet"
    ]


def test_log_spectrum_step_is_rounded_level_percent(client, run_id):
    # 0.29 * 100 = 28.999999999999996 and 0.57 * 100 = 56.99999999999999: round, not int().
    rows = [_row("joint", "all", lv, "mae", lv) for lv in (0.0, 0.29, 0.57, 1.0)]
    log_spectrum(client, run_id, rows)
    assert [s for s, _ in _history(client, run_id, "spectrum/joint/all/mae")] == [0, 29, 57, 100]


def test_log_spectrum_test_split_prefixed(client, run_id, tmp_path):
    rows = [_row("missing", "all", lv, "mae", 1.0 + lv) for lv in (0.0, 0.1)]
    log_spectrum(client, run_id, rows, split="test")
    logged = client.get_run(run_id).data.metrics
    assert set(logged) == {
        "test/spectrum/missing/all/mae",
        "test/robust/missing/all/auilc_mae",
        "test/robust/missing/all/mean_mae",
        "test/robust/missing/all/ratemean_mae",
        "test/robust/missing/all/worst_mae",
    }
    assert logged["test/robust/missing/all/auilc_mae"] == pytest.approx((1.0 + 1.1) / 2 * 0.1)
    assert logged["test/robust/missing/all/worst_mae"] == pytest.approx(1.1)
    local = client.download_artifacts(run_id, "spectrum/spectrum_test.parquet", str(tmp_path))
    assert pq.read_table(local).to_pylist() == rows


def test_log_metrics_batches_of_at_most_1000(client, run_id, spy):
    n = 2500
    log_metrics(client, run_id, ((f"m/{i:04d}", float(i) / 7, i % 5) for i in range(n)))
    assert len(spy.calls) == math.ceil(n / 1000) == 3
    assert [c["metrics"] for c in spy.calls] == [1000, 1000, 500]
    assert max(c["metrics"] for c in spy.calls) <= MAX_METRICS_PER_BATCH
    logged = client.get_run(run_id).data.metrics
    assert logged == pytest.approx({f"m/{i:04d}": float(i) / 7 for i in range(n)})


def test_log_metrics_steps_make_history(client, run_id, spy):
    log_metrics(client, run_id, [("val/mae", 3.0 - e, e) for e in range(5)])
    assert len(spy.calls) == 1
    assert _history(client, run_id, "val/mae") == [(e, 3.0 - e) for e in range(5)]


def test_log_metrics_skips_non_finite(client, run_id, spy):
    log_metrics(
        client,
        run_id,
        [
            ("nan", math.nan, 0),
            ("inf", math.inf, 0),
            ("ninf", -math.inf, 0),
            ("ok", 1.5, 0),
            ("int", 3, 1),
        ],
    )
    assert client.get_run(run_id).data.metrics == {"ok": 1.5, "int": 3.0}
    assert _history(client, run_id, "int") == [(1, 3.0)]


def test_log_metrics_nothing_to_log_makes_no_request(client, run_id, spy):
    log_metrics(client, run_id, [("nan", math.nan, 0)])
    log_metrics(client, run_id, [])
    assert spy.calls == []
    assert client.get_run(run_id).data.metrics == {}


def test_log_params_more_than_100_in_batches(client, run_id, spy):
    params = {f"p.{i:03d}": i for i in range(250)}
    params["long"] = "x" * 7000
    params["nested_list"] = [1, 2]
    log_params(client, run_id, params)
    assert [c["params"] for c in spy.calls] == [100, 100, 52]
    logged = client.get_run(run_id).data.params
    assert len(logged) == 252
    for i in range(250):
        assert logged[f"p.{i:03d}"] == str(i)
    assert logged["nested_list"] == "[1, 2]"
    assert logged["long"] == "x" * 6000  # MLflow's param value limit


def test_flatten_nested():
    tree = {
        "model": {"name": "qa_moe", "config": {"experts": 4, "top_k": 2}},
        "levels": [0.0, 0.5],
        "empty": {},
        "seed": 0,
    }
    assert flatten(tree) == {
        "model.name": "qa_moe",
        "model.config.experts": 4,
        "model.config.top_k": 2,
        "levels": [0.0, 0.5],
        "empty": {},
        "seed": 0,
    }
    assert flatten({}) == {}
    assert flatten({"a": {"b": 1}}, "cfg.") == {"cfg.a.b": 1}


def test_start_run_with_parent_sets_parent_tag(client, experiment):
    parent = start_run(client, experiment, "study", tags={"robustmsa.study": "s1"})
    child = start_run(client, experiment, "trial-0", parent_run_id=parent, tags={"k": "v"})
    p, c = client.get_run(parent), client.get_run(child)
    assert "mlflow.parentRunId" not in p.data.tags
    assert p.data.tags["robustmsa.study"] == "s1"
    assert c.data.tags["mlflow.parentRunId"] == parent
    assert c.data.tags["k"] == "v"
    assert c.info.run_name == "trial-0"
    assert c.info.status == "RUNNING"
    assert c.info.experiment_id == experiment


def test_end_dangling_runs_ends_only_running_children_of_parent(client, experiment):
    parent = start_run(client, experiment, "study")
    other_parent = start_run(client, experiment, "other-study")
    running = [start_run(client, experiment, f"t{i}", parent_run_id=parent) for i in range(2)]
    finished = start_run(client, experiment, "done", parent_run_id=parent)
    client.set_terminated(finished, "FINISHED")
    foreign = start_run(client, experiment, "foreign", parent_run_id=other_parent)

    assert end_dangling_runs(client, experiment, parent) == 2
    for r in running:
        info = client.get_run(r)
        assert info.info.status == "KILLED"
        assert info.data.tags["robustmsa.ended_by"] == "study driver"
    assert client.get_run(finished).info.status == "FINISHED"
    assert "robustmsa.ended_by" not in client.get_run(finished).data.tags
    assert client.get_run(foreign).info.status == "RUNNING"
    assert client.get_run(parent).info.status == "RUNNING"
    assert client.get_run(other_parent).info.status == "RUNNING"
    # Nothing left to end: a second sweep is a no-op.
    assert end_dangling_runs(client, experiment, parent) == 0
    assert end_dangling_runs(client, experiment, other_parent, status="FAILED") == 1
    assert client.get_run(foreign).info.status == "FAILED"


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_tracking_uri_http_closed_port_names_uri():
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(RobustMSAError) as info:
        check_tracking_uri_fn(uri, timeout=2.0)
    assert uri in str(info.value)


@pytest.mark.parametrize(
    "uri", ["sqlite:///mlruns.db", "sqlite:////tmp/robustmsa-new-store.db", "file:///tmp/mlruns"]
)
def test_check_tracking_uri_accepts_non_http(uri):
    assert check_tracking_uri_fn(uri) is None


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        code = self.status if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    servers = []

    def start(status):
        handler = type("H", (_Health,), {"status": status})
        server = HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_check_tracking_uri_healthy_server(health_server):
    uri = health_server(200)
    assert check_tracking_uri_fn(uri + "/", timeout=2.0) is None


def test_check_tracking_uri_unhealthy_server(health_server):
    uri = health_server(503)
    with pytest.raises(RobustMSAError) as info:
        check_tracking_uri_fn(uri, timeout=2.0)
    assert uri in str(info.value)


@pytest.fixture
def non_http_service():
    """A TCP service that answers every request with a non-HTTP banner (like SSH does)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(0.05)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    conn.recv(4096)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2.0)
    sock.close()


def test_check_tracking_uri_non_http_service_names_uri(non_http_service):
    with pytest.raises(RobustMSAError) as info:
        check_tracking_uri_fn(non_http_service, timeout=2.0)
    assert non_http_service in str(info.value)


@pytest.mark.parametrize("uri", ["http://localhost:abc", "http://[::1"])
def test_check_tracking_uri_malformed_http_uri_names_uri(uri):
    with pytest.raises(RobustMSAError) as info:
        check_tracking_uri_fn(uri, timeout=2.0)
    assert uri in str(info.value)


def test_resolve_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env-server:5000")
    assert resolve_tracking_uri("http://configured:5000", tmp_path) == "http://configured:5000"
    assert resolve_tracking_uri(None, tmp_path) == "http://env-server:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None, tmp_path) == "sqlite:///" + str(
        tmp_path.resolve() / "mlruns.db"
    )
    assert resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_resolve_tracking_uri_relative_root_is_absolute(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    uri = resolve_tracking_uri(None, Path("sub"))
    assert uri == f"sqlite:///{tmp_path.resolve()}/sub/mlruns.db"
    assert Path(uri.removeprefix("sqlite:///")).is_absolute()
