"""Tracking writes that outlive an MLflow outage: retried, then spooled to local files, then
backfilled.

Every MLflow request already retries a failed connection or a 5xx answer with exponential
backoff (MLflow's ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``..._BACKOFF_FACTOR``: about two
minutes by default). A write that still fails after that is not lost: `SpoolingClient` appends
it to a spool file of this process under the spool folder (``ROBUSTMSA_TRACKING_SPOOL``, set
by the study to ``<root>/.robustmsa/spool``; artifacts are copied next to it), and every later
write of that client goes to the spool too, so that the order of a run's writes is kept. The
study replays every spool when it ends (`sync`; its parent run then says what was delayed in
``robustmsa.tracking.delayed``), and ``robustmsa tracking sync`` replays a spool left behind (a
study that ended while the server was still down, a worker on another node).

On a sqlite store, a write that finds the database locked by another writer waits and tries
again (up to `LOCK_WAIT_S`) before it fails.

Reads (finding a run, its metrics) cannot be spooled: they wait out MLflow's retries like
before. Creating a run needs the server too (its id comes from it).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

SPOOL_ENV = "ROBUSTMSA_TRACKING_SPOOL"
DELAYED_TAG = "robustmsa.tracking.delayed"
# The writes the project makes; each is spooled with JSON-able arguments (`_encode`).
SPOOLED = (
    "log_batch", "log_metric", "set_tag", "set_terminated", "update_run", "log_text",
    "log_table", "log_artifact", "log_artifacts",
)  # fmt: skip


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the tracking server could not be reached (after MLflow's own
    retries): a connection error, or MLflow's wrapper of one, or a 5xx answer."""
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, MlflowException):
        text = str(exc)
        return any(
            marker in text
            for marker in ("Max retries exceeded", "Connection refused", "too many 5", "503", "502")
        )
    return False


class SpoolingClient(MlflowClient):
    """An `MlflowClient` whose writes (`SPOOLED`) go to a local spool when the server is out
    of reach (module docstring). ``spool_dir``: the spool folder (default: ``$`` `SPOOL_ENV`;
    without one, writes fail as with MLflow's client)."""

    def __init__(self, tracking_uri: str | None = None, spool_dir: str | Path | None = None):
        super().__init__(tracking_uri)
        folder = spool_dir or os.environ.get(SPOOL_ENV)
        self._spool = Spool(Path(folder)) if folder else None
        self._spooling = False

    @property
    def spooled(self) -> int:
        """How many writes this client spooled."""
        return self._spool.count if self._spool else 0


# A sqlite store takes one writer at a time: a write that finds it locked (another process's
# transaction, a cancelled task's connection not yet closed) waits and tries again, up to this.
LOCK_WAIT_S = 30.0


def _write(name: str, client, args, kwargs):
    """``MlflowClient.<name>`` through ``client``, retried while a sqlite store is locked."""
    delay, deadline = 0.1, time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return getattr(MlflowClient, name)(client, *args, **kwargs)
        except MlflowException as exc:
            if "database is locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


def _spooling_method(name: str):
    def method(self, *args, **kwargs):
        if self._spool is None:
            return _write(name, self, args, kwargs)
        if not self._spooling:
            try:
                return _write(name, self, args, kwargs)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self._spooling = True  # from now on in order, behind this one
        self._spool.append(name, args, kwargs)
        return None

    method.__name__ = name
    method.__doc__ = f"`MlflowClient.{name}`, spooled during an outage."
    return method


for _name in SPOOLED:
    setattr(SpoolingClient, _name, _spooling_method(_name))


class Spool:
    """One process's spool: ``<folder>/<host>-<pid>-<token>.jsonl``, one write per line, and
    the files its artifact writes copied to ``<same name>.files/``."""

    def __init__(self, folder: Path):
        self.folder = folder
        stem = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = folder / f"{stem}.jsonl"
        self.files = folder / f"{stem}.files"
        self.count = 0
        self._lock = threading.Lock()

    def append(self, method: str, args: tuple, kwargs: dict) -> None:
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            args, kwargs = list(args), dict(kwargs)
            if method in ("log_artifact", "log_artifacts"):
                # (run_id, local_path or local_dir, ...): the caller's copy may be temporary.
                key = "local_path" if method == "log_artifact" else "local_dir"
                if len(args) > 1:
                    args[1] = {"__path__": str(self._keep(Path(args[1])))}
                elif key in kwargs:
                    kwargs[key] = {"__path__": str(self._keep(Path(kwargs[key])))}
            record = {"method": method, "args": [self._encode(a) for a in args],
                      "kwargs": {k: self._encode(v) for k, v in kwargs.items()}}  # fmt: skip
            line = json.dumps(record)
            with self.path.open("a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())  # a spooled write survives this process
            self.count += 1

    def _encode(self, value: Any) -> Any:
        import pandas as pd

        if isinstance(value, Metric):
            return {"__metric__": [value.key, value.value, value.timestamp, value.step]}
        if isinstance(value, Param):
            return {"__param__": [value.key, value.value]}
        if isinstance(value, RunTag):
            return {"__tag__": [value.key, value.value]}
        if isinstance(value, pd.DataFrame):
            return {"__frame__": value.to_json(orient="split")}
        if isinstance(value, list | tuple):
            return [self._encode(v) for v in value]
        if isinstance(value, os.PathLike):
            return str(value)
        return value

    def _keep(self, source: Path) -> Path:
        """A copy of the file or folder ``source`` in the spool (the caller's may be temporary)."""
        target = self.files / uuid.uuid4().hex[:12] / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return target


def _decode(value: Any) -> Any:
    import pandas as pd

    if isinstance(value, dict) and len(value) == 1:
        (key, inner), = value.items()  # fmt: skip
        if key == "__metric__":
            return Metric(*inner)
        if key == "__param__":
            return Param(*inner)
        if key == "__tag__":
            return RunTag(*inner)
        if key == "__frame__":
            from io import StringIO

            return pd.read_json(StringIO(inner), orient="split")
        if key == "__path__":
            return inner
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def pending(folder: str | Path) -> list[Path]:
    """The spool files left in ``folder``, oldest first."""
    root = Path(folder)
    return sorted(root.glob("*.jsonl"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []


def sync(folder: str | Path, client: MlflowClient) -> int:
    """Replay every spool file in ``folder`` through ``client`` (a plain `MlflowClient`), each
    in order, deleting it once replayed; returns how many writes were replayed. Stops at the
    first write that fails (the server is still out of reach: run it again later); what was
    replayed of that file is not replayed twice."""
    replayed = 0
    for path in pending(folder):
        lines = path.read_text().splitlines()
        done_marker = path.with_suffix(".done")
        start = int(done_marker.read_text()) if done_marker.exists() else 0
        for i, line in enumerate(lines[start:], start=start):
            record = json.loads(line)
            args = [_decode(a) for a in record["args"]]
            kwargs = {k: _decode(v) for k, v in record["kwargs"].items()}
            getattr(MlflowClient, record["method"])(client, *args, **kwargs)
            done_marker.write_text(str(i + 1))
            replayed += 1
        shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
        path.unlink()
        done_marker.unlink(missing_ok=True)
    return replayed
