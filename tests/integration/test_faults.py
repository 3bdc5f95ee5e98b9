"""Fault drills on real studies: a study script against a real MLflow server, faults injected by
signalling or killing processes by their PID (never by name).

One search study goes through every fault in turn, so that the drills share its cost:

1. R1, a training worker killed (SIGKILL) mid-trial: Tune restarts the trial from its last
   checkpoint (``study.max_failures``) and the run records the restart;
2. Ctrl-C (SIGINT to the study's process group, as a terminal sends it) during the search: the
   whole study stops, every run ends KILLED with ``robustmsa.outcome = interrupted``, exit 130
   with the command that resumes it;
3. R2, the study resumed (``--resume``) and its driver killed with SIGKILL: the parent and the
   trials it ran are left RUNNING;
4. ``robustmsa resume --run-id PARENT`` finishes it, with (R3) the MLflow server stopped for
   ``OUTAGE_S`` as soon as that study has taken its parent run over (its set-up, Tune's restore
   and its trials wait on the server), then started again on the same port and store.

Then MLflow's final state: every run ended, one run per trial, every epoch logged once, and
the trial that lived through all of it re-trains bit for bit (``robustmsa reproduce``), as the
run that never stopped would have. A second, short drill interrupts a comparison study during
its reference model's training: nothing after it starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from paths import REPO
from robustmsa.cli import main
from servers import free_port, mlflow_server, venv_env

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EPOCHS = 8
TRIALS = 2
# Slow enough epochs (batch 4 on the tiny preset: about half a second) that each fault lands
# inside a trial; no pruning, so every trial trains all its epochs and the counts are exact.
STUDY_ARGS = [
    "--smoke-test",
    "--set", f"training.epochs={EPOCHS}",
    "--set", "training.batch_size=4",
    "--set", f"search.num_samples={TRIALS}",
    "--set", "search.scheduler=none",
    "--set", "training.patience=100",
]  # fmt: skip
SCORE = "val/spectrum_score"
# The outage of R3. MLflow's retries back off 2, 4, 8, 16 s...: 10 s spans three of them. The
# issue's 30 s was run once with this drill (OUTAGE_S = 30, 2026-12-03: passed, nothing lost);
# the suite keeps the shorter one for its time budget.
OUTAGE_S = 10
# Credentials as a user gives them, through the environment (the drill's server has no auth and
# ignores them): none may appear in a parameter, tag, artifact or log of the study.
SECRETS = {"MLFLOW_TRACKING_USERNAME": "drill", "MLFLOW_TRACKING_PASSWORD": "pw-4f1c9e-secret"}


class RestartableServer:
    """A real MLflow server (sqlite store) that a drill can stop, by its PID, and start again
    on the same port and store."""

    def __init__(self, workdir: Path):
        self.workdir, self.port = workdir, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._running = contextlib.ExitStack()

    def start(self) -> None:
        self._running.enter_context(mlflow_server(self.workdir, port=self.port))

    def stop(self) -> None:
        self._running.close()
        self._running = contextlib.ExitStack()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    found = RestartableServer(tmp_path_factory.mktemp("faults-mlflow"))
    found.start()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def tracking(server) -> str:
    return server.uri


class Study:
    """A study process of the drill: started in a session of its own (its process group is
    what a terminal's Ctrl-C reaches), its output in ``log``."""

    def __init__(self, args: list[str], root: Path, uri: str, name: str):
        self.log = root / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=venv_env(MLFLOW_TRACKING_URI=uri, **SECRETS),
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(  # noqa: B904 (the timeout is the failure)
                f"{self.log.name}: no exit in {timeout} s:\n{self.output()[-3000:]}"
            )

    def kill_driver(self) -> None:
        """SIGKILL the driver alone, then what it leaves behind of its local Ray (by PID)."""
        left = psutil.Process(self.proc.pid).children(recursive=True)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        _, alive = psutil.wait_procs(left, timeout=10)
        for p in alive:
            p.kill()
        psutil.wait_procs(alive, timeout=10)


def until(what: str, check: Callable[[], object], study: Study, timeout: float = 300):
    """Poll ``check`` until it returns something true, and return that; fail when the study
    exits or ``timeout`` passes first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        if study.proc.poll() is not None:
            raise AssertionError(f"study exited ({study.proc.returncode}) before {what}:\n"
                                 f"{study.output()[-3000:]}")  # fmt: skip
        time.sleep(0.1)
    raise AssertionError(f"no {what} after {timeout} s:\n{study.output()[-3000:]}")


def runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def trial_runs(client, experiment: str) -> list:
    return [r for r in runs(client, experiment)
            if r.data.tags.get("mlflow.runName", "").startswith("trial_")]  # fmt: skip


def text_artifacts_holding(client, run, secret: str, path: str | None = None) -> list[str]:
    """The run's text artifacts (YAML, JSON, text) that contain ``secret``."""
    found = []
    for item in client.list_artifacts(run.info.run_id, path):
        if item.is_dir:
            found += text_artifacts_holding(client, run, secret, item.path)
        elif item.path.endswith((".yaml", ".json", ".txt", ".log")):
            with tempfile.TemporaryDirectory() as tmp:
                text = Path(client.download_artifacts(run.info.run_id, item.path, tmp)).read_text()
            if secret in text:
                found.append(item.path)
    return found


def epochs_logged(client, run) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, SCORE))


def test_a_study_survives_a_lost_worker_ctrl_c_and_a_killed_driver(
    server, tracking, tmp_path, capsys
):
    client = MlflowClient(tracking)
    script = ["studies/qa_moe_search.py", *STUDY_ARGS, "--root", str(tmp_path)]

    # 1. R1: a trial's training process killed after its second epoch.
    study = Study(script, tmp_path, tracking, "study")

    def training_trial():
        for r in trial_runs(client, "qa_moe_search"):
            if r.info.status == "RUNNING" and len(epochs_logged(client, r)) >= 2:
                return r
        return None

    victim = until("a trial with two epochs", training_trial, study)
    trial_id = victim.data.tags["robustmsa.trial_id"]
    at_kill = len(epochs_logged(client, victim))
    os.kill(int(victim.data.tags["robustmsa.process"].rpartition(":")[2]), signal.SIGKILL)

    def restarted():
        run = client.get_run(victim.info.run_id)
        moved = len(epochs_logged(client, run)) > at_kill
        return int(run.data.tags.get("robustmsa.restarts", 0)) >= 1 and moved

    until("the killed trial restarted and training", restarted, study)

    # 2. Ctrl-C during the search: the terminal's SIGINT reaches the whole process group.
    os.killpg(study.proc.pid, signal.SIGINT)
    assert study.wait() == 130, study.output()[-3000:]
    parent = next(r for r in runs(client, "qa_moe_search")
                  if "mlflow.parentRunId" not in r.data.tags)  # fmt: skip
    assert f"robustmsa resume --run-id {parent.info.run_id}" in study.output()
    state = runs(client, "qa_moe_search")
    assert {r.info.status for r in state} <= {"KILLED", "FINISHED"}
    assert parent.info.status == "KILLED"
    for r in state:
        if r.info.status == "KILLED":
            assert r.data.tags.get("robustmsa.outcome") == "interrupted", r.data.tags
    # No later phase: the summary and the test report come after the search.
    assert "best/val/spectrum_score" not in parent.data.metrics
    assert "best_config.yaml" not in [a.path for a in client.list_artifacts(parent.info.run_id)]
    before = {
        r.info.run_id: len(epochs_logged(client, r)) for r in trial_runs(client, "qa_moe_search")
    }

    # 3. R2: resumed, then its driver killed while a trial trains.
    resumed = Study([*script, "--resume"], tmp_path, tracking, "resumed")

    def trained_more():
        return any(len(epochs_logged(client, r)) > before.get(r.info.run_id, 0)
                   for r in trial_runs(client, "qa_moe_search"))  # fmt: skip

    until("a resumed trial training", trained_more, resumed)
    resumed.kill_driver()
    assert client.get_run(parent.info.run_id).info.status == "RUNNING"

    # 4. Finished by `robustmsa resume`, (R3) through OUTAGE_S with the MLflow server down.
    before = {
        r.info.run_id: len(epochs_logged(client, r)) for r in trial_runs(client, "qa_moe_search")
    }
    done = Study(["-m", "robustmsa.cli", "resume", "--run-id", parent.info.run_id,
                  "--tracking-uri", tracking], tmp_path, tracking, "resume")  # fmt: skip

    def resumed_again():  # the study is under way: it has taken its parent run over again
        run = client.get_run(parent.info.run_id)
        return run.info.status == "RUNNING" and run.data.tags.get("robustmsa.resumes") == "2"

    until("the study resumed a second time", resumed_again, done)
    server.stop()
    time.sleep(OUTAGE_S)
    server.start()
    assert done.wait() == 0, done.output()[-3000:]
    assert "spooled" not in done.output()  # MLflow's own retries outlasted the outage

    final = runs(client, "qa_moe_search")
    assert all(r.info.status == "FINISHED" for r in final), [
        (r.data.tags.get("mlflow.runName"), r.info.status) for r in final
    ]
    parent = client.get_run(parent.info.run_id)
    assert parent.data.tags["robustmsa.resumes"] == "2"
    assert parent.data.tags["robustmsa.outcome"] == "completed"
    trials = trial_runs(client, "qa_moe_search")
    ids = [r.data.tags["robustmsa.trial_id"] for r in trials]
    assert len(ids) == len(set(ids)) == TRIALS  # one run per trial, none duplicated
    references = [r for r in final if r.data.tags.get("robustmsa.role") == "reference"]
    assert len(references) == 1
    for r in [*trials, *references]:
        assert epochs_logged(client, r) == list(range(1, EPOCHS + 1)), r.data.tags["mlflow.runName"]
        assert r.data.tags["robustmsa.outcome"] == "completed"
    survivor = next(r for r in trials if r.data.tags["robustmsa.trial_id"] == trial_id)
    assert int(survivor.data.tags["robustmsa.restarts"]) >= 2  # the worker, then the resume
    # In this process (it re-trains in-process anyway): the imports are already paid for.
    rc = main(["reproduce", "--run-id", survivor.info.run_id, "--tracking-uri", tracking])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "reproduced bit for bit" in out

    # R5: the credentials are nowhere in what the study wrote.
    secret = SECRETS["MLFLOW_TRACKING_PASSWORD"]
    logs = [study.output(), resumed.output(), done.output()]
    assert not [i for i, text in enumerate(logs) if secret in text]
    leaks = []
    for r in final:
        for name, value in {**r.data.params, **r.data.tags}.items():
            if secret in value:
                leaks.append((r.info.run_id, name))
        leaks += [(r.info.run_id, path) for path in text_artifacts_holding(client, r, secret)]
    assert leaks == []


def test_ctrl_c_during_the_reference_model_starts_nothing_after_it(tracking, tmp_path):
    """compare_models trains its reference model first: interrupted then, the compared models
    never start."""
    client = MlflowClient(tracking)
    study = Study(
        ["studies/model_comparison.py", *STUDY_ARGS[:5], "--root", str(tmp_path)],
        tmp_path, tracking, "comparison",
    )  # fmt: skip

    def reference_training():
        for r in runs(client, "model_comparison"):
            if r.data.tags.get("robustmsa.role") == "reference" and epochs_logged(client, r):
                return r
        return None

    until("the reference model training", reference_training, study)
    os.killpg(study.proc.pid, signal.SIGINT)
    assert study.wait() == 130, study.output()[-3000:]
    assert "interrupted by SIGINT during the reference runs" in study.output()
    state = runs(client, "model_comparison")
    roles = sorted(r.data.tags.get("robustmsa.role", "parent") for r in state)
    assert roles == ["parent", "reference"]  # the compared models never started
    assert all(r.info.status == "KILLED" for r in state)
    assert all(r.data.tags.get("robustmsa.outcome") == "interrupted" for r in state)
