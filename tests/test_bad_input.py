"""Bad input, one table: data, configs, the command line and servers.

Every case runs the real entry point in this process (a study script's `study_main`, or
`robustmsa`'s `main`) and must end with one line naming the thing that is wrong, exit status 2,
no Ray started (a study validates its whole dataset before Ray starts or any run exists), no
run in the tracking store and no half-written output file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from paths import REPO
from robustmsa.cli import main, study_main

STUDY = REPO / "studies" / "configs" / "qa_moe_search.yaml"
SMOKE = ["--smoke-test"]


@dataclasses.dataclass
class Case:
    """``argv(ctx)``: the arguments; ``expect``: text the error line must hold (formatted with
    the context's paths); ``study``: a study script's arguments, else ``robustmsa``'s."""

    name: str
    argv: Callable[[Ctx], list[str]]
    expect: str
    study: bool = True
    env: Callable[[Ctx], dict[str, str]] | None = None  # the environment it runs in
    file_size_limit: int | None = None  # RLIMIT_FSIZE while it runs: a quota on every file


@dataclasses.dataclass
class Ctx:
    tmp: Path
    data: Path  # a writable copy of the tiny dataset, for the data cases to spoil
    store: str  # an empty sqlite store that exists
    other_store: str  # another store holding one run (`foreign_run`)
    foreign_run: str
    file: Path  # a plain file
    listener: int  # a loopback port held by something that is not an MLflow server
    out: Path  # where an output would go (must not exist afterwards)

    def yaml(self, text: str) -> str:
        path = self.tmp / "config.yaml"
        path.write_text(text)
        return str(path)


def parquet_data(ctx: Ctx) -> list[str]:
    return ["--set", "data.source=parquet", "--set", f"data.path={ctx.data}"]


def rewrite_train(ctx: Ctx, change: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite train.parquet through ``change``, keeping its schema metadata (digest included)."""
    path = ctx.data / "train.parquet"
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def set_label(table: pa.Table, value: float) -> pa.Table:
    labels = table.column("label").to_numpy().copy()
    labels[3] = value
    i = table.schema.get_field_index("label")
    return table.set_column(i, table.schema.field(i), pa.array(labels, pa.float32()))


def spoil(ctx: Ctx, how: str) -> Ctx:
    train = ctx.data / "train.parquet"
    if how == "corrupt":
        train.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "truncated":
        train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    elif how == "missing split":
        (ctx.data / "test.parquet").unlink()
    elif how == "label out of range":
        rewrite_train(ctx, lambda t: set_label(t, 99.0))
    elif how == "label nan":
        rewrite_train(ctx, lambda t: set_label(t, float("nan")))
    elif how == "changed under its digest":  # a valid label, another value: same metadata
        rewrite_train(ctx, lambda t: set_label(t, float(t.column("label")[3].as_py()) / 2 + 0.01))
    return ctx


def data_case(name: str, how: str, expect: str) -> Case:
    return Case(name, lambda c: [*SMOKE, *parquet_data(spoil(c, how))], expect)


CASES = [
    # --- data: found before Ray starts, named by file, row and field
    data_case("corrupt parquet", "corrupt", "train.parquet: not a readable Parquet file"),
    data_case("truncated parquet", "truncated", "train.parquet: not a readable Parquet file"),
    data_case("dataset without a split", "missing split", "test.parquet: split file not found"),
    data_case("label out of range", "label out of range", "train.parquet: row 3"),
    data_case("label not finite", "label nan", "train.parquet: row 3"),
    Case(
        "no room for the frame cache",
        lambda c: [*SMOKE, *parquet_data(c)],
        "no room for the frame cache of",
        file_size_limit=32 * 1024,
    ),
    data_case(
        "content changed under its digest",
        "changed under its digest",
        "train.parquet: content differs from the digest",
    ),
    Case(
        "data.path not a folder",
        lambda c: [
            *SMOKE,
            "--set",
            "data.source=parquet",
            "--set",
            f"data.path={c.tmp / 'nowhere'}",
        ],
        "data.path: dataset directory",
    ),
    Case(
        "unknown synthetic preset",
        lambda c: ["--set", "data.preset=huge"],
        "synthetic preset 'huge' unknown",
    ),
    # --- configs
    Case("empty config file", lambda c: ["--config", c.yaml("")], "empty config"),
    Case(
        "config that is a list",
        lambda c: ["--config", c.yaml("- a\n- b\n")],
        "the top level must be a mapping",
    ),
    Case("malformed YAML", lambda c: ["--config", c.yaml("model: [qa_moe\n")], "malformed YAML"),
    Case(
        "config file missing",
        lambda c: ["--config", str(c.tmp / "no.yaml")],
        "cannot read config file",
    ),
    Case(
        "unknown top-level section",
        lambda c: ["--config", c.yaml("model: {name: qa_moe}\nmodle: {}\n")],
        "modle",
    ),
    Case("--set unknown key", lambda c: ["--set", "training.epoch=3"], "training.epoch"),
    Case("--set without a value", lambda c: ["--set", "training.epochs"], "training.epochs"),
    Case(
        "weight average of 1 (weights that never move)",
        lambda c: ["--set", "training.weight_average=1.0"],
        "weight_average: must be in [0, 1), got 1.0",
    ),
    Case(
        "unknown learning-rate schedule",
        lambda c: ["--set", "training.lr_schedule=step"],
        "training.lr_schedule: expected one of ['constant', 'cosine'], got 'step'",
    ),
    Case(
        "negative number of trials",
        lambda c: ["--set", "search.num_samples=-1"],
        "num_samples: must be >= 1",
    ),
    Case(
        "zero epochs",
        lambda c: ["--set", "training.epochs=0", "--root", str(c.tmp / "r")],
        "training.epochs: a study trains at least 1 epoch",
    ),
    Case(
        "no concurrency",
        lambda c: ["--set", "study.max_concurrent=0"],
        "max_concurrent: must be >= 1",
    ),
    Case(
        "negative max_failures",
        lambda c: ["--set", "study.max_failures=-1"],
        "max_failures: must be >= 0",
    ),
    Case("unknown model", lambda c: ["--set", "model.name=qa_mo"], "unknown model 'qa_mo'"),
    Case("unknown study kind", lambda c: ["--set", "study.kind=grid"], "grid"),
    Case(
        "unknown objective",
        lambda c: ["--set", 'search.objectives=["val/rmse"]'],
        "search.objectives[0]: unknown objective 'val/rmse'",
    ),
    Case(
        "search space that never fits",
        lambda c: [
            "--set",
            'search.space=[{"name": '
            '"model.params.num_experts", "type": "int", "low": 2, "high": 4}, {"name": '
            '"model.params.top_k", "type": "int", "low": 6, "high": 8}]',
        ],
        "search.space: no valid config",
    ),
    Case(
        "search space on an unknown key",
        lambda c: [
            "--set",
            'search.space=[{"name": "model.params.experts", "type": "int", "low": 2, "high": 4}]',
        ],
        "model.params.experts: unknown key",
    ),
    Case(
        "reference model unknown",
        lambda c: ["--set", "study.reference_model=lately"],
        "reference_model: unknown model 'lately'",
    ),
    # --- where outputs go
    Case(
        "--root that is a file",
        lambda c: [*SMOKE, "--root", str(c.file)],
        "--root {file}: exists and is not a folder",
    ),
    Case(
        "--root under a file",
        lambda c: [*SMOKE, "--root", str(c.file / "sub")],
        "--root {file}/sub: cannot be created",
    ),
    # --- tracking servers and stores
    Case(
        "tracking URI of unknown scheme",
        lambda c: [*SMOKE, "--set", "tracking.uri=mlfow://x"],
        "unknown scheme 'mlfow'",
    ),
    Case(
        "tracking store that is not a database",
        lambda c: [*SMOKE, "--set", f"tracking.uri=sqlite:///{c.file}"],
        "is not an SQLite database",
    ),
    Case(
        "tracking store in a missing folder",
        lambda c: [*SMOKE, "--set", f"tracking.uri=sqlite:///{c.tmp}/no/such/mlruns.db"],
        "does not exist",
    ),
    Case(
        "unreachable tracking server",
        lambda c: [*SMOKE, "--set", "tracking.uri=http://127.0.0.1:9"],
        "http://127.0.0.1:9: unreachable",
    ),
    Case(
        "tracking port held by another service",
        lambda c: [*SMOKE, "--set", f"tracking.uri=http://127.0.0.1:{c.listener}"],
        "unreachable",
    ),
    Case(
        "nothing to resume",
        lambda c: [*SMOKE, "--resume", "--set", f"tracking.uri={c.store}"],
        "no interrupted or killed study",
    ),
    Case(
        "resume a run of another store",
        lambda c: [*SMOKE, "--resume", c.foreign_run, "--set", f"tracking.uri={c.store}"],
        "not found",
    ),
    Case(
        "unreachable tracking server from the environment",
        lambda c: SMOKE,
        "MLflow tracking URI http://127.0.0.1:9: unreachable",
        env=lambda c: {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    ),
    Case(
        "a job on a cluster without a tracking server",
        lambda c: SMOKE,
        "MLFLOW_TRACKING_URI is not set: on the Ray cluster at http://127.0.0.1:9",
        env=lambda c: {"RAY_ADDRESS": "http://127.0.0.1:9"},
    ),
    Case(
        "storage on a filesystem pyarrow does not know",
        lambda c: ["--set", "study.storage_path=nope://bucket/results"],
        "study.storage_path: nope://bucket/results: no usable pyarrow filesystem",
    ),
    Case(
        "data on a filesystem pyarrow does not know",
        lambda c: ["--set", "data.source=parquet", "--set", "data.path=nope://bucket/mosi"],
        "data.path: nope://bucket/mosi: no usable pyarrow filesystem for scheme 'nope'",
    ),
    Case(
        "GPUs per trial without GPU training",
        lambda c: ["--set", "study.gpus_per_trial=0.5"],
        "study.gpus_per_trial: 0.5 GPUs per trial needs training.use_gpu: true",
    ),
    Case(
        "a GPU and a half per trial",
        lambda c: ["--set", "training.use_gpu=true", "--set", "study.gpus_per_trial=1.5"],
        "study.gpus_per_trial: must be a fraction in [0, 1] or a whole number, got 1.5",
    ),
    Case(
        "concurrency that is not a number",
        lambda c: ["--set", "study.max_concurrent=many"],
        "study.max_concurrent: expected int or 'auto', got 'many'",
    ),
    Case(
        "a learning rate that is not a number",
        lambda c: ["--set", "training.lr=fast"],
        "training.lr: expected float, got 'fast'",
    ),
    Case(
        "a password in the tracking URI",
        lambda c: ["--set", "tracking.uri=http://alice:s3cret@127.0.0.1:9"],
        "tracking.uri: holds a password",
    ),
    # --- the robustmsa command
    Case(
        "evaluate a run of another store",
        lambda c: ["evaluate", "--run-id", c.foreign_run, "--tracking-uri", c.store],
        "{foreign_run}",
        study=False,
    ),
    Case(
        "evaluate with batch size 0",
        lambda c: ["evaluate", "--run-id", "x", "--batch-size", "0", "--tracking-uri", c.store],
        "--batch-size: must be a positive integer",
        study=False,
    ),
    Case(
        "evaluate --out not Parquet",
        lambda c: [
            "evaluate",
            "--run-id",
            "x",
            "--out",
            str(c.tmp / "t.csv"),
            "--tracking-uri",
            c.store,
        ],
        "must end in .parquet",
        study=False,
    ),
    Case(
        "evaluate --out in a missing folder",
        lambda c: [
            "evaluate",
            "--run-id",
            "x",
            "--out",
            str(c.tmp / "no" / "t.parquet"),
            "--tracking-uri",
            c.store,
        ],
        "does not exist",
        study=False,
    ),
    Case(
        "evaluate --out that is a folder",
        lambda c: [
            "evaluate",
            "--run-id",
            "x",
            "--out",
            str(c.out.parent),
            "--tracking-uri",
            c.store,
        ],
        "must end in .parquet",
        study=False,
    ),
    Case(
        "evaluate on an unknown device",
        lambda c: ["evaluate", "--run-id", "x", "--device", "abacus", "--tracking-uri", c.store],
        "--device abacus: not a torch device",
        study=False,
    ),
    Case(
        "read from a store that does not exist",
        lambda c: ["report", "--run-id", "x", "--tracking-uri", f"sqlite:///{c.tmp}/none.db"],
        "no such store",
        study=False,
    ),
    Case(
        "report --out that is a file",
        lambda c: ["report", "--run-id", "x", "--out", str(c.file), "--tracking-uri", c.store],
        "exists and is not a directory",
        study=False,
    ),
    Case(
        "confirm over no seeds",
        lambda c: ["reproduce", "--run-id", "x", "--seeds", "0", "--tracking-uri", c.store],
        "--seeds: a confirmation needs at least 2 seeds",
        study=False,
    ),
    Case(
        "resume a run that is not a study",
        lambda c: ["resume", "--run-id", c.foreign_run, "--tracking-uri", c.other_store],
        "not a study's parent run",
        study=False,
    ),
    Case(
        "resume an unknown run",
        lambda c: ["resume", "--run-id", "0" * 32, "--tracking-uri", c.store],
        "not found",
        study=False,
    ),
    Case(
        "inspect a missing dataset",
        lambda c: ["data", "inspect", str(c.tmp / "none")],
        "none",
        study=False,
    ),
    Case(
        "synthesise an unknown preset",
        lambda c: ["data", "synth", "--preset", "huge", "--out", str(c.out)],
        "synthetic preset 'huge' unknown",
        study=False,
    ),
    Case(
        "check a cluster file that is not YAML",
        lambda c: ["cluster", "check", str(c.file)],
        "{file}",
        study=False,
    ),
]
if not torch.cuda.is_available():
    CASES.append(
        Case(
            "evaluate on CUDA without CUDA",
            lambda c: ["evaluate", "--run-id", "x", "--device", "cuda", "--tracking-uri", c.store],
            "--device cuda: CUDA is not available",
            study=False,
        )
    )


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[str, str, str]:
    """An empty sqlite store, and another holding one run (not a study's): read-only for the
    cases, which must leave both as they are."""
    where = tmp_path_factory.mktemp("stores")
    store = f"sqlite:///{where / 'mlruns.db'}"
    MlflowClient(store).search_experiments()  # creates the empty store
    other = f"sqlite:///{where / 'other.db'}"
    client = MlflowClient(other)
    foreign = client.create_run(client.create_experiment("elsewhere")).info.run_id
    return store, other, foreign


@pytest.fixture
def ctx(tmp_path, tiny_dataset, stores, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    plain = tmp_path / "afile"
    plain.write_text("not yaml: [\n")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def answer_not_http() -> None:  # the port's owner: speaks another protocol, then hangs up
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                conn.close()

    threading.Thread(target=answer_not_http, daemon=True).start()
    yield Ctx(
        tmp_path,
        data,
        *stores,
        plain,
        listener.getsockname()[1],
        tmp_path / "out" / "table.parquet",
    )
    listener.close()


def runs_in(store: str) -> int:
    client = MlflowClient(store)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_refused_by_name(case: Case, ctx: Ctx, capsys, monkeypatch):
    (ctx.out.parent).mkdir()
    argv = case.argv(ctx)
    for key, value in (case.env(ctx) if case.env else {}).items():
        monkeypatch.setenv(key, value)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    if case.file_size_limit:  # CPython ignores SIGXFSZ: a write past it fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (case.file_size_limit, limits[1]))
    try:
        if case.study:
            root = [] if "--root" in argv else ["--root", str(ctx.tmp / "root")]
            rc = study_main([*argv, *root], default_config=STUDY, description="")
        else:
            rc = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        rc = exc.code
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    expect = case.expect.format(file=ctx.file, foreign_run=ctx.foreign_run)
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("robustmsa: error: "), err
    assert expect in lines[0], lines[0]
    assert not ray.is_initialized()
    assert runs_in(ctx.store) == 0 and runs_in(ctx.other_store) == 1
    assert not ctx.out.exists() and list(ctx.out.parent.iterdir()) == []
    assert not (ctx.tmp / "root" / "mlruns.db").exists()
