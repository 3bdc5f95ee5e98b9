"""``robustmsa reproduce``: re-train a logged trial, bit for bit, or confirm it over seeds.

A run is a study's parent (its selected trial, tag ``robustmsa.selected_run_id``) or any trial
run that logged a checkpoint (``checkpoint/config.yaml``, ``state.json`` and the chosen
epoch's validation rows ``spectrum_valid.json``).

- `reproduce_run`: trains the run's exact config and seed in this process, on the CPU, with as
  many torch threads as the trial had (``study.cpus_per_trial``; a Ray worker of one CPU runs
  one thread), for as many epochs as the trial ran (an ASHA-pruned trial stopped early), and
  compares the validation rows of the chosen epoch with the logged ones, value by value.
  On the CPU in one process they are equal bit for bit: the data order, the corruption draws
  and the initial weights all come from the seeds. A GPU, another thread count or another
  torch build may round differently (README, "Reproducing a trial").
- `confirm_study`: the config of a ``confirm`` study (`robustmsa.search.kinds.confirm`) of
  the run's config with N training seeds, paired with the reference model, under a new parent
  run in the run's experiment.

Bad input (an unknown run, a run without a checkpoint or config, a study without a selected
trial, a config that no longer loads) raises `RobustMSAError` before anything is written.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from robustmsa.errors import ConfigError, RobustMSAError

SELECTED_TAG = "robustmsa.selected_run_id"


@dataclass
class LoggedTrial:
    """A trial run's logged checkpoint: its config (raw, as logged), its checkpoint state and
    the validation rows of its chosen epoch."""

    run_id: str
    experiment_id: str
    raw: dict[str, Any]
    state: dict[str, Any]
    rows: list[dict]


@dataclass
class Reproduction:
    run_id: str
    epochs: int
    rows: int
    differing: int
    max_abs_diff: float
    first_difference: str | None

    @property
    def identical(self) -> bool:
        return self.differing == 0


def trial_run(client, run_id: str):
    """The trial run that ``run_id`` names: the run itself, or a study parent's selected
    trial."""
    from robustmsa.evaluation.report import get_run
    from robustmsa.tracking.runs import PARENT_TAG, STUDY_TAG

    run = get_run(client, run_id)
    tags = run.data.tags
    if STUDY_TAG in tags and PARENT_TAG not in tags:
        selected = tags.get(SELECTED_TAG)
        if not selected:
            kind = run.data.params.get("study.kind", "?")
            raise RobustMSAError(
                f"run {run_id}: a study's parent run (kind {kind}) without a selected trial "
                f"(tag {SELECTED_TAG}); reproduce one of its child runs instead"
            )
        return get_run(client, selected)
    return run


def load_logged_trial(client, run_id: str) -> LoggedTrial:
    """The checkpoint that the trial run of ``run_id`` logged (`trial_run`)."""
    import json

    from robustmsa.evaluation.logged import CHECKPOINT_ARTIFACTS
    from robustmsa.training.checkpoint import CONFIG_FILE, ROWS_FILE, STATE_FILE

    run = trial_run(client, run_id)
    rid = run.info.run_id
    files = {}
    with tempfile.TemporaryDirectory(prefix="robustmsa-reproduce-") as tmp:
        for name in (CONFIG_FILE, STATE_FILE, ROWS_FILE):
            try:
                local = client.download_artifacts(rid, f"{CHECKPOINT_ARTIFACTS}/{name}", tmp)
                files[name] = Path(local).read_text()
            except Exception as exc:  # MLflow raises its own errors for a missing artifact
                raise RobustMSAError(
                    f"run {rid}: no logged {CHECKPOINT_ARTIFACTS}/{name} (only finished trials "
                    f"log their checkpoint): {str(exc).splitlines()[0]}"
                ) from exc
    raw = yaml.safe_load(files[CONFIG_FILE])
    if not isinstance(raw, dict):
        raise RobustMSAError(f"run {rid}: {CHECKPOINT_ARTIFACTS}/{CONFIG_FILE} is not a mapping")
    return LoggedTrial(
        rid, run.info.experiment_id, raw, json.loads(files[STATE_FILE]),
        json.loads(files[ROWS_FILE]),
    )  # fmt: skip


def logged_config(trial: LoggedTrial):
    """The trial's config as this code reads it; `ConfigError` naming the run and key when it
    no longer loads (a model renamed, a key removed)."""
    from robustmsa.config import from_dict

    try:
        return from_dict(trial.raw)
    except ConfigError as exc:
        raise ConfigError(f"run {trial.run_id}: its checkpoint/config.yaml: {exc}") from exc


class _StopAfter(Exception):
    pass


class _RowsAt:
    """A training reporter that keeps the chosen epoch's rows and stops after ``epochs``."""

    def __init__(self, epochs: int):
        self.epochs, self.rows = epochs, None

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        from robustmsa.training.checkpoint import load_state

        if checkpoint_dir is not None:
            self.rows = load_state(checkpoint_dir)[1]
        if metrics["epoch"] >= self.epochs:
            raise _StopAfter


def compare_rows(logged: list[dict], fresh: list[dict]) -> tuple[int, float, str | None]:
    """``(rows that differ, largest absolute difference, the first differing point)``."""

    def key(r):
        return r["protocol"], r["modalities"], round(r["level"], 6), r["metric"]

    theirs = {key(r): r["value"] for r in logged}
    mine = {key(r): r["value"] for r in fresh}
    if set(theirs) != set(mine):
        odd = sorted(set(theirs) ^ set(mine))[0]
        return max(len(theirs), len(mine)), math.inf, f"{odd}: in one table only"
    differing, largest, first = 0, 0.0, None
    for k, value in theirs.items():
        other = mine[k]
        same = value == other or (math.isnan(value) and math.isnan(other))
        if not same:
            differing += 1
            largest = max(largest, abs(value - other))
            first = first or f"{'/'.join(map(str, k))}: logged {value!r}, now {other!r}"
    return differing, largest, first


def reproduce_run(client, run_id: str) -> Reproduction:
    """Re-train the trial of ``run_id`` and compare (module docstring)."""
    import torch

    from robustmsa.training.loop import run_training

    trial = load_logged_trial(client, run_id)
    config = logged_config(trial)
    if config.training.use_gpu:
        raise RobustMSAError(
            f"run {trial.run_id}: trained on a GPU; reproduce compares CPU runs bit for bit"
        )
    epochs = int(trial.state["epoch"])
    reporter = _RowsAt(epochs)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(config.study.cpus_per_trial)))
    try:
        run_training(config, reporter)
    except _StopAfter:
        pass
    finally:
        torch.set_num_threads(before)
    differing, largest, first = compare_rows(trial.rows, reporter.rows or [])
    return Reproduction(trial.run_id, epochs, len(trial.rows), differing, largest, first)


def confirm_config(trial: LoggedTrial, seeds: int, tracking_uri: str, experiment: str):
    """The ``confirm`` study of the trial's config (module docstring)."""
    from robustmsa.config import from_dict

    logged_config(trial)  # the config as logged still loads
    raw = dict(trial.raw)
    study = dict(raw.get("study") or {})
    raw.pop(study.get("kind", "search"), None)
    study["kind"] = "confirm"
    raw["study"] = study
    raw["confirm"] = {"seeds": seeds, "source_run_id": trial.run_id}
    raw["name"] = f"confirm-{trial.run_id[:8]}"
    raw["tracking"] = {"uri": tracking_uri, "experiment": experiment}
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"run {trial.run_id}: confirming its config: {exc}") from exc


def confirm_study(client, run_id: str, seeds: int, tracking_uri: str):
    """The ``confirm`` study config of ``run_id`` (module docstring), in the run's experiment;
    everything is checked here, before a study writes anything
    (`robustmsa.search.study.run_study` runs it)."""
    trial = load_logged_trial(client, run_id)
    experiment = client.get_experiment(trial.experiment_id).name
    return confirm_config(trial, seeds, tracking_uri, experiment)
