"""The study's console (`robustmsa.search.console`) and the progress bars of long steps.

`ConsoleProgress` is driven with stand-ins for Tune's `Trial` (id, config, last result, error
file): what is tested is our formatting and our outcome rule, not Tune. One real Tune run on the
session's local Ray checks that `quiet_ray_logs` names the logger of Ray's per-checkpoint line
in the trial process, and that the line comes back with ``verbose``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from ray import tune
from ray.exceptions import RayTaskError
from robustmsa.data.parquet import open_dataset
from robustmsa.data.synthetic import generate
from robustmsa.errors import RobustMSAError
from robustmsa.evaluation.spectrum import SpectrumEvaluator
from robustmsa.models import MODELS
from robustmsa.search import console
from robustmsa.search.console import (
    QUIET_ENV,
    QUIET_LOGGERS,
    WORKER_SETUP_HOOK,
    ConsoleProgress,
    quiet_ray_logs,
    worker_runtime_env,
)
from robustmsa.spectrum import build_points

METRIC = "val/spectrum_score"
LINE = re.compile(r"^\[ *\d+\.\ds\] ")


@dataclass
class FakeTrial:
    trial_id: str
    config: dict
    last_result: dict = field(default_factory=dict)
    pickled_error_file: str | None = None
    error_file: str | None = None


def epoch_result(epoch: int, score: float, best: float, best_epoch: int, **extra) -> dict:
    return {
        "epoch": epoch,
        METRIC: score,
        "best/" + METRIC: best,
        "best/epoch": best_epoch,
        "training_iteration": max(epoch, 1),
        **extra,
    }


class Console:
    """A `ConsoleProgress` whose lines are collected, driven like Tune drives it."""

    def __init__(self, capsys, **kw):
        kw.setdefault("total", 3)
        kw.setdefault("epochs", 4)
        self.cb = ConsoleProgress(metric=METRIC, started=time.time() - 12.0, **kw)
        self.capsys = capsys

    def lines(self) -> list[str]:
        out = self.capsys.readouterr().out.splitlines()
        assert all(LINE.match(line) for line in out), out
        return [LINE.sub("", line) for line in out]

    def start(self, trial):
        self.cb.on_trial_start(0, [], trial)
        return self.lines()[-1]

    def result(self, trial, result):
        trial.last_result = result
        self.cb.on_trial_result(0, [], trial, result)
        return self.lines()[-1]

    def complete(self, trial):
        self.cb.on_trial_complete(0, [], trial)
        return self.lines()[-1]

    def error(self, trial):
        self.cb.on_trial_error(0, [], trial)
        return self.lines()[-1]


def test_a_search_prints_starts_epochs_the_best_so_far_and_trials_done(capsys):
    c = Console(capsys, total=2, epochs=2)
    a = FakeTrial("aaaa1", {"model.params.lr": 0.001234, "model.params.num_experts": 4})
    b = FakeTrial("bbbb2", {"model.params.lr": 0.25, "model.params.num_experts": 8})

    assert c.start(a) == "trial_aaaa1 started  lr=0.00123, num_experts=4  best -  done 0/2"
    assert c.result(a, epoch_result(1, 0.9, 0.9, 1, epochs=2, patience_exhausted=0)) == (
        "trial_aaaa1 epoch 1/2  val score 0.9000  best 0.9000 (trial_aaaa1)  done 0/2"
    )
    assert c.start(b).startswith("trial_bbbb2 started  lr=0.25, num_experts=8  best 0.9000")
    assert c.result(b, epoch_result(1, 0.8, 0.8, 1, epochs=2, patience_exhausted=0)) == (
        "trial_bbbb2 epoch 1/2  val score 0.8000  best 0.8000 (trial_bbbb2)  done 0/2"
    )
    # a's second epoch is its best, not the study's
    assert c.result(a, epoch_result(2, 0.85, 0.85, 2, epochs=2, patience_exhausted=0)) == (
        "trial_aaaa1 epoch 2/2  val score 0.8500  best 0.8000 (trial_bbbb2)  done 0/2"
    )
    assert c.complete(a) == (
        "trial_aaaa1 completed 2/2 epochs  trial best 0.8500 (epoch 2)  "
        "best 0.8000 (trial_bbbb2)  done 1/2"
    )
    assert c.complete(b) == (
        "trial_bbbb2 pruned at epoch 1/2  trial best 0.8000 (epoch 1)  "
        "best 0.8000 (trial_bbbb2)  done 2/2"
    )
    c.cb.on_experiment_end([])
    assert c.lines() == ["trial: 1 completed, 1 pruned  best 0.8000 (trial_bbbb2)  done 2/2"]


def test_a_budgeted_search_shows_the_trial_epochs_spent_and_who_the_budget_stopped(capsys):
    c = Console(capsys, total=4, epochs=3, budget=4)
    a, b = FakeTrial("aaaa1", {}), FakeTrial("bbbb2", {})
    c.start(a)
    c.result(a, epoch_result(1, 0.9, 0.9, 1, epochs=3, patience_exhausted=0))
    c.start(b)
    assert c.result(b, epoch_result(1, 0.8, 0.8, 1, epochs=3, patience_exhausted=0)).endswith(
        "done 0/4, 2/4 trial-epochs"
    )
    c.result(a, epoch_result(2, 0.85, 0.85, 2, epochs=3, patience_exhausted=0))
    assert c.complete(b).endswith("done 1/4, 3/4 trial-epochs")  # pruned after one epoch
    c.result(a, epoch_result(3, 0.7, 0.7, 3, epochs=3, patience_exhausted=0))
    c.cb.on_experiment_end([a, b, FakeTrial("cccc3", {})])  # a and c stopped with the study
    assert c.lines() == [
        "trial: 1 pruned, 2 stopped by the budget  best 0.7000 (trial_aaaa1)  done 1/4, "
        "4/4 trial-epochs"
    ]


def test_the_elapsed_time_runs_from_the_study_start(capsys):
    cb = ConsoleProgress(total=1, epochs=1, started=time.time() - 41.3)
    cb.on_trial_start(0, [], FakeTrial("t1", {"lr": 0.1}))
    seconds = float(re.match(r"^\[ *(\d+\.\d)s\]", capsys.readouterr().out).group(1))
    assert 41.3 <= seconds < 45


@pytest.mark.parametrize(
    ("last", "outcome"),
    [
        ({"epoch": 4, "epochs": 4, "patience_exhausted": 0}, "completed"),  # every epoch
        ({"epoch": 2, "epochs": 4, "patience_exhausted": 1}, "completed"),  # its own patience
        ({"epoch": 2, "epochs": 4, "patience_exhausted": 0}, "pruned"),  # ASHA stopped it
        # ASHA stopped it on the report whose epoch exhausted its patience: the checkpoint
        # says patience_exhausted, the run is completed (finish_trial_run's rule)
        ({"epoch": 2, "epochs": 4, "patience_exhausted": 1, "done": False}, "completed"),
        ({"epoch": 2, "epochs": 2, "patience_exhausted": 0}, "completed"),  # the trial's own
        ({"epoch": 0, "epochs": 0, "patience_exhausted": 0}, "completed"),  # zero epochs
        # a loop that does not report them: the configured epochs, and Tune's done (the
        # function returned by itself)
        ({"epoch": 4}, "completed"),
        ({"epoch": 2, "done": True}, "completed"),
        ({"epoch": 2, "done": False}, "pruned"),
        ({}, "no result"),
    ],
)
def test_pruned_or_completed_follows_finish_trial_runs_rule(last, outcome):
    assert ConsoleProgress(total=1, epochs=4).outcome(last) == outcome


def test_early_stopping_and_a_silent_trial_have_their_own_lines(capsys):
    c = Console(capsys, total=2, epochs=8)
    t = FakeTrial("early", {"lr": 0.1})
    c.result(t, epoch_result(5, 0.7, 0.6, 2, epochs=8, patience_exhausted=1))
    assert c.complete(t).startswith(
        "trial_early completed, stopped early (patience) at epoch 5/8  trial best 0.6000 (epoch 2)"
    )
    assert c.complete(FakeTrial("mute", {"lr": 0.1})).startswith(
        "trial_mute ended without reporting a result  best 0.6000 (trial_early)  done 2/2"
    )


def test_an_error_prints_its_cause_and_drops_the_trial_from_the_best(capsys, tmp_path):
    c = Console(capsys, total=2)
    good, bad = FakeTrial("good1", {"lr": 0.1}), FakeTrial("bad22", {"lr": 0.2})
    c.result(good, epoch_result(1, 0.9, 0.9, 1, epochs=4, patience_exhausted=0))
    c.result(bad, epoch_result(3, 0.5, 0.5, 3, epochs=4, patience_exhausted=0))
    # What Tune writes in the driver before it calls on_trial_error: the text of the trial's
    # RayTaskError (its pickled copy beside it is never read: unpickling runs code).
    tb = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\nsecond line'
    wrapped = RayTaskError("run_trial", tb, ValueError("boom\nsecond line"))
    bad.error_file = str(tmp_path / "error.txt")
    Path(bad.error_file).write_text(f"Failure # 1 (occurred at 2026-12-03)\n{wrapped}\n")
    bad.pickled_error_file = str(tmp_path / "error.pkl")
    Path(bad.pickled_error_file).write_bytes(b"not to be read")
    assert c.error(bad) == (
        "trial_bad22 error at epoch 3/4: ValueError: boom second line  "
        "best 0.9000 (trial_good1)  done 1/2"
    )
    # A qualified exception name is shortened to the class.
    other = FakeTrial("text3", {"lr": 0.3}, error_file=str(tmp_path / "error3.txt"))
    Path(other.error_file).write_text(
        "Failure # 1\nTraceback\n  ...\nray.exceptions.RuntimeError: worker died\n"
    )
    assert c.error(other).startswith("trial_text3 error: RuntimeError: worker died  best 0.9000")
    c.cb.on_experiment_end([])
    assert c.lines()[-1].startswith("trial: 2 error  best 0.9000")


def test_variant_trials_show_their_role_not_their_overrides(capsys):
    c = Console(capsys, total=1, epochs=2, label="reference")
    ref = FakeTrial(
        "0e8bf_00000",
        {"robustmsa.variant": {"role": "reference", "overrides": {"model.name": "late_fusion"}}},
    )
    assert c.start(ref) == "reference_0e8bf_00000 (reference) started  best -  done 0/1"
    line = c.result(ref, epoch_result(1, 1.25, 1.25, 1, epochs=2, patience_exhausted=0))
    assert line == (
        "reference_0e8bf_00000 (reference) epoch 1/2  val score 1.2500  "
        "best 1.2500 (reference_0e8bf_00000)  done 0/1"
    )


def test_lines_go_to_the_stream_given():
    class Sink:
        text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    sink = Sink()
    ConsoleProgress(total=1, epochs=1, stream=sink).on_trial_start(0, [], FakeTrial("x", {}))
    assert "trial_x started" in sink.text


# ---------------------------------------------------------------------------------------------
# Quiet by default, everything back with --verbose


@pytest.fixture
def restore_logging():
    """Starts from a console with nothing held back (a caller may have quieted this process
    with `quiet_ray_logs`) and leaves the loggers, the environment and the console's state as
    they were."""
    quiet_ray_logs(True)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    env = {key: os.environ.get(key) for key in QUIET_ENV}
    yield
    quiet_ray_logs(True)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_quiet_ray_logs_holds_back_ray_mlflow_and_optuna_info_and_verbose_restores(
    restore_logging, monkeypatch
):
    for key in QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    logging.getLogger("ray.train._internal.storage").setLevel(logging.NOTSET)
    logging.getLogger("optuna.storages._in_memory").setLevel(logging.ERROR)  # stricter: kept
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")  # the user's: kept
    assert "ray.train._internal.storage" in QUIET_LOGGERS
    assert "mlflow.store.db.utils" in QUIET_LOGGERS

    quiet_ray_logs(False)
    quiet_ray_logs(False)  # idempotent: the second call saves nothing over the first
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    assert levels == {
        **dict.fromkeys(QUIET_LOGGERS, logging.WARNING),
        "optuna.storages._in_memory": logging.ERROR,
    }
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
    assert worker_runtime_env() == {"worker_process_setup_hook": WORKER_SETUP_HOOK}
    # the hook Ray imports by name in each worker
    module, _, func = WORKER_SETUP_HOOK.rpartition(".")
    assert getattr(sys.modules[module], func) is console.quiet_worker_logs

    quiet_ray_logs(True)
    assert logging.getLogger("ray.train._internal.storage").level == logging.NOTSET
    assert logging.getLogger("optuna.storages._in_memory").level == logging.ERROR
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
    assert worker_runtime_env() == {}


@pytest.mark.parametrize("verbose", [False, True])
def test_study_main_parses_verbose_and_quiets_before_the_study(
    verbose, restore_logging, monkeypatch
):
    import robustmsa.search.study as study
    from paths import REPO
    from robustmsa.cli import study_main

    seen = {}

    def fake_run_study(config, root, resume_run_id=None):
        seen["quiet"] = worker_runtime_env() != {}
        seen["level"] = logging.getLogger("ray.train._internal.storage").level
        raise RobustMSAError("stop here")

    quiet_ray_logs(True)
    level_before = logging.getLogger("ray.train._internal.storage").level
    monkeypatch.setattr(study, "run_study", fake_run_study)
    argv = ["--smoke-test", "--root", "/nonexistent", *(["--verbose"] if verbose else [])]
    assert study_main(argv, REPO / "studies" / "configs" / "qa_moe_search.yaml", "t") == 2
    assert seen["quiet"] is not verbose
    assert (seen["level"] == logging.WARNING) is not verbose
    # ... and leaves the console as it found it: a notebook's next cell is not quieted.
    assert worker_runtime_env() == {}
    assert logging.getLogger("ray.train._internal.storage").level == level_before


def test_the_per_checkpoint_line_is_gone_by_default_and_back_with_verbose(
    local_ray, capfd, tmp_path
):
    """A real Tune run: two trials of a trivial function reporting a checkpoint per iteration,
    one quiet (as every trial process of a quiet study), one verbose. Ray prefixes each line
    that a trial process logs with its pid; each trial says which it is, after its reports."""

    def trainable(config):
        import sys
        import tempfile

        from ray import tune
        from robustmsa.search.console import quiet_ray_logs

        quiet_ray_logs(config["verbose"])
        for i in range(2):
            with tempfile.TemporaryDirectory() as d:
                tune.report({"i": i}, checkpoint=tune.Checkpoint.from_directory(d))
        sys.stderr.write(f"console-test {'loud' if config['verbose'] else 'hushed'} trial\n")
        sys.stderr.flush()

    capfd.readouterr()
    tune.Tuner(
        trainable,
        param_space={"verbose": tune.grid_search([False, True])},
        tune_config=tune.TuneConfig(reuse_actors=False),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"),
            verbose=0,
        ),
    ).fit()
    err = ""
    deadline = time.time() + 15  # the driver prints the trials' lines from a thread
    while time.time() < deadline:
        err += capfd.readouterr().err
        if "console-test hushed" in err and "console-test loud" in err:
            break
        time.sleep(0.2)
    pid = {
        kind: re.search(rf"pid=(\d+)\)\S* console-test {kind} trial", err).group(1)
        for kind in ("hushed", "loud")
    }
    saved = re.findall(r"pid=(\d+)\)\S* Checkpoint successfully created at", err)
    assert pid["loud"] in saved
    assert pid["hushed"] not in saved


# ---------------------------------------------------------------------------------------------
# Progress bars of long single steps


def test_generation_and_frame_cache_bars_show_on_a_terminal_only(tmp_path, capsys, monkeypatch):
    generate("tiny", tmp_path / "quiet", seed=1)
    open_dataset(tmp_path / "quiet", frame_cache=tmp_path / "frames-quiet")
    assert capsys.readouterr().err == ""  # stderr is not a terminal here

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys's stderr
    generate("tiny", tmp_path / "shown", seed=1)
    open_dataset(tmp_path / "shown", frame_cache=tmp_path / "frames-shown")
    err = capsys.readouterr().err
    assert "synthetic tiny" in err
    assert "frame cache shown/train" in err


def test_the_spectrum_bar_is_off_unless_asked_and_changes_nothing(tiny_splits, capsys):
    spec = MODELS["late_fusion"]
    torch.manual_seed(0)
    model = spec.build(spec.config_cls(), dict(tiny_splits["valid"].meta.dims)).eval()
    points = build_points(["clean", "missing@all"], (0.0, 0.5, 1.0))
    evaluator = SpectrumEvaluator(tiny_splits["valid"], points, seed=0, batch_size=16)
    silent = evaluator.evaluate(model)
    assert capsys.readouterr().err == ""
    shown = evaluator.evaluate(model, progress="test report")
    batches = -(-len(tiny_splits["valid"]) // 16)
    err = capsys.readouterr().err
    assert f"test report ({len(points)} points x {batches} batches)" in err
    assert f"0/{len(points) * batches} " in err  # one step per point and batch
    assert shown == silent
