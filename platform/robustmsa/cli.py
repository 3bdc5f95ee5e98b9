"""The ``robustmsa`` command line, and the shared entry point of the study scripts.

Bad input (config, data, model name, tracking URI) prints one line, ``robustmsa: error: ...``,
to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from robustmsa.errors import ConfigError, RobustMSAError
from robustmsa.search.interrupt import StudyInterrupted

# A study's --smoke-test: the same config, shrunk to finish in a few minutes on 2 cores (and
# each study kind's own shrinking, `StudyKind.smoke`).
SMOKE_OVERRIDES = {"training.epochs": 2, "study.max_concurrent": 2}


def _fail(message: str) -> int:
    print(f"robustmsa: error: {message}", file=sys.stderr)
    return 2


def study_main(argv: list[str] | None, default_config: Path, description: str) -> int:
    """Parse a study script's arguments, run the study, print where the results are."""
    from robustmsa.config import load

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=default_config, help="study YAML")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value (repeatable)",
    )
    parser.add_argument(
        "--smoke-test", action="store_true", help="a tiny study (synthetic 'tiny', 2 trials)"
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="folder for local outputs")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show what Ray, Tune, MLflow and Optuna print on their own (a line per "
        "checkpoint, Tune's tables and TensorBoard hint); by default one line per trial event",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=LATEST,
        metavar="PARENT_RUN_ID",
        help="continue an interrupted or killed study of this config (the same arguments): "
        "the latest one, or the one of this parent run; reads Tune's saved state from the "
        "study's own storage (docs/faults.md)",
    )
    args = parser.parse_args(argv)
    try:
        config = load(args.config, args.overrides)
        if args.smoke_test:
            from robustmsa.search.kinds import KINDS

            smoke = {**SMOKE_OVERRIDES, **KINDS[config.study.kind].smoke}
            if config.data.source == "synthetic":
                smoke["data.preset"] = "tiny"
            overrides = [f"{k}={json.dumps(v)}" for k, v in smoke.items()]
            config = load(args.config, overrides + args.overrides)
        from robustmsa.search.console import quiet_console
        from robustmsa.search.study import run_study

        resume_run_id = None
        if args.resume:
            resume_run_id = _resume_target(config, args.resume, args.root)
        with quiet_console(args.verbose):  # before Ray starts: its local workers inherit it
            result = run_study(config, root=args.root, resume_run_id=resume_run_id)
    except StudyInterrupted as exc:
        return _interrupted(exc)
    except RobustMSAError as exc:
        return _fail(str(exc))
    print(format_result(result, config.tracking.experiment))
    return 0


LATEST = "latest"  # --resume without a run id


def _resume_target(config, requested: str, root: Path) -> str:
    """The parent run a study script's ``--resume`` continues."""
    from mlflow.tracking import MlflowClient

    from robustmsa.search.resume import latest_resumable
    from robustmsa.tracking.runs import check_tracking_uri, resolve_tracking_uri

    if requested != LATEST:
        return requested
    uri = resolve_tracking_uri(config.tracking.uri, root.resolve())
    check_tracking_uri(uri)
    return latest_resumable(MlflowClient(uri), config.tracking.experiment, config.name)


def _interrupted(exc) -> int:
    """An interrupted study: its line (with how to resume) and ``128 + signal``."""
    print(f"robustmsa: {exc}", file=sys.stderr)
    return 128 + exc.signum


def format_result(result, experiment: str) -> str:
    from robustmsa.search.kinds import KINDS

    kind = KINDS[result.kind]
    what = f"{len(result.trials)} searched trials" if result.kind == "search" else result.kind
    lines = [f"Study finished in {result.wall_s:.1f} s: {what}"]
    if kind.format is not None:
        lines += kind.format(result)
    if result.code:
        c = result.code
        lines.append(
            f"Code: robustmsa {c['version']} from {c['path']} (commit {c['commit']}, "
            f"digest {c['digest']}); up to {result.max_concurrent} trials at once"
        )
    lines.append(f"MLflow: {result.tracking_uri}  experiment '{experiment}'")
    lines.append(f"  parent run {result.parent_run_id} (best_config.yaml attached)")
    lines.append(f"Ray Tune results: {result.storage_path}")
    from robustmsa.tracking.runs import runs_view_url  # the runs view, not GenAI traces

    if result.tracking_uri.startswith(("http://", "https://")):
        lines.append(f"See them: {runs_view_url(result.tracking_uri, result.experiment_id)}")
    elif result.tracking_uri.startswith("sqlite:"):
        mlflow = Path(sys.executable).with_name("mlflow")
        ui = runs_view_url("http://127.0.0.1:5000", result.experiment_id)
        lines.append(
            f"See them: {mlflow} ui --backend-store-uri {result.tracking_uri} "
            f"--host 127.0.0.1 --port 5000   (then open {ui})"
        )
    else:
        lines.append(f"See them: open {result.tracking_uri} in a browser")
    return "\n".join(lines)


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="generate a synthetic dataset")
    synth.add_argument("--preset", default="tiny")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True)

    inspect = data.add_parser("inspect", help="splits, counts, dims, presence, labels, digest")
    inspect.add_argument("path", type=Path)

    imp = data.add_parser("import", help="import a source dataset to Parquet")
    fmt = imp.add_subparsers(dest="format", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, required=True, help="new dataset directory")
    common.add_argument("--name", default=None, help="dataset name (default: from the source)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    mmsa = fmt.add_parser("mmsa", parents=[common], help="MMSA pickle (aligned/unaligned)")
    mmsa.add_argument("src", type=Path)
    mmsa.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow unpickling SRC: a pickle can run arbitrary code, use only files you trust",
    )

    mfn = fmt.add_parser("mfn", parents=[common], help="MFN-style HDF5 folder")
    mfn.add_argument("src", type=Path)
    labels = mfn.add_mutually_exclusive_group()
    labels.add_argument("--label-column", type=int, default=None, help="take label column K")
    labels.add_argument(
        "--label-values", type=_float_list, default=None, help="one-hot classes to v0,v1,..."
    )
    mfn.add_argument("--label-range", type=_float_list, default=None, help="lo,hi")

    csd = fmt.add_parser("csd", parents=[common], help="CMU-MultimodalSDK .csd sequences")
    csd.add_argument("src", type=Path, help="folder holding the .csd files and the folds file")
    for m in ("text", "audio", "vision"):
        csd.add_argument(f"--{m}", default=None, help=f"{m} .csd file in SRC")
    csd.add_argument("--labels", required=True, help="labels .csd file in SRC")
    csd.add_argument("--folds", required=True, help="JSON {train|valid|test: [video ids]} in SRC")
    csd.add_argument("--reference", default="text", help="modality whose intervals align")


def _run_data_command(args) -> None:
    if args.data_command == "synth":
        from robustmsa.data.synthetic import generate

        out = generate(args.preset, args.out, args.seed)
        print(f"wrote synthetic dataset {args.preset!r} (seed {args.seed}) to {out}")
    elif args.data_command == "inspect":
        from robustmsa.data.inspect import format_inspection, inspect_dataset

        print(format_inspection(inspect_dataset(args.path)))
    elif args.data_command == "import":
        print(_import(args).format())


def _import(args):
    progress = not args.quiet
    if args.format == "mmsa":
        from robustmsa.data.importers.mmsa import import_mmsa

        return import_mmsa(
            args.src, args.out, trust_pickle=args.trust_pickle, name=args.name,
            show_progress=progress,
        )  # fmt: skip
    if args.format == "mfn":
        from robustmsa.data.importers.mfn import import_mfn

        label_range = None
        if args.label_range is not None:
            if len(args.label_range) != 2:
                raise RobustMSAError(f"--label-range: expected lo,hi, got {args.label_range}")
            label_range = (args.label_range[0], args.label_range[1])
        return import_mfn(
            args.src, args.out, name=args.name, label_column=args.label_column,
            label_values=args.label_values, label_range=label_range, show_progress=progress,
        )  # fmt: skip
    from robustmsa.data.importers.csd import import_csd

    sources = {
        m: args.src / getattr(args, m) for m in ("text", "audio", "vision") if getattr(args, m)
    }
    return import_csd(
        sources, args.src / args.labels, args.src / args.folds, args.out,
        reference=args.reference, name=args.name, show_progress=progress,
    )  # fmt: skip


def _add_tracking_uri(parser) -> None:
    parser.add_argument(
        "--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else ./mlruns.db (sqlite)"
    )


def _add_evaluate_command(sub) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="re-evaluate a logged checkpoint on the spectrum",
        description="Re-evaluate the checkpoint that a finished trial logged to MLflow: its best "
        "weights (chosen on validation) on the spectrum points of a split. Writes the long-form "
        "table; logs nothing to the run.",
    )
    ev.add_argument("--run-id", required=True, help="MLflow run id of a finished trial")
    ev.add_argument("--split", choices=["valid", "test"], default="valid")
    ev.add_argument(
        "--protocols", nargs="+", metavar="NAME", help="default: the run's validation protocols"
    )
    ev.add_argument("--batch-size", type=int, default=128)
    ev.add_argument("--out", type=Path, help="write the table here (.parquet)")
    _add_tracking_uri(ev)
    ev.add_argument("--device", default="cpu")


def _evaluate(args) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow.tracking import MlflowClient

    from robustmsa.errors import ConfigError
    from robustmsa.evaluation.logged import evaluate_split, load_logged
    from robustmsa.evaluation.summaries import spectrum_score

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be a positive integer, got {args.batch_size}")
    _check_device(args.device)
    if args.out is not None:
        if args.out.suffix != ".parquet":
            raise ConfigError(f"--out {args.out}: must end in .parquet")
        if not args.out.parent.is_dir():
            raise ConfigError(f"--out {args.out}: directory {args.out.parent} does not exist")
        if args.out.is_dir():
            raise ConfigError(f"--out {args.out}: is a folder")
        if not os.access(args.out.parent, os.W_OK):
            raise ConfigError(f"--out {args.out}: directory {args.out.parent} is not writable")
    trained = load_logged(MlflowClient(_read_only_store(args.tracking_uri)), args.run_id)
    rows = evaluate_split(
        trained, args.split, args.protocols, batch_size=args.batch_size, device=args.device
    )
    if args.out is not None:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, args.out)  # never a half-written table under the final name
    for r in rows:
        print(
            f"{r['protocol']:>10} {r['modalities']:>18} {r['level']:5.2f} "
            f"{r['metric']:>10} {r['value']:10.4f}"
        )
    print(f"spectrum score ({args.split}): {spectrum_score(rows):.4f}")


def _check_device(device: str) -> None:
    """`ConfigError` naming ``--device`` when torch does not know it or cannot reach it."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise ConfigError(f"--device {device}: not a torch device ({exc})") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device}: only cpu and cuda are supported")


def _add_report_command(sub) -> None:
    rep = sub.add_parser(
        "report",
        help="draw a logged run's figures",
        description="Draw the figures of a run that a study logged (its validation spectrum, "
        "and its test report when it has one), with the study's oracle as the ceiling, from "
        "the numbers the run logged: nothing is retrained or re-evaluated. The figures are "
        "logged to the run under figures/<split>/ and, with --out, written there too.",
    )
    rep.add_argument("--run-id", required=True, help="MLflow run id of a trial or reference run")
    rep.add_argument("--out", type=Path, help="also write the PNGs to OUT/<split>/")
    _add_tracking_uri(rep)


def _read_only_store(configured: str | None) -> str:
    """The tracking URI of a command that only reads runs: checked to answer, and for a
    sqlite store to exist (MLflow would create an empty one and then find no run)."""
    from robustmsa.tracking.runs import check_tracking_uri, resolve_tracking_uri

    uri = resolve_tracking_uri(configured, Path.cwd())
    check_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        path = Path.cwd() / uri.removeprefix("sqlite:///")  # sqlite:////abs: an absolute path
        if not path.is_file():
            raise RobustMSAError(f"MLflow tracking URI {uri}: no such store ({path} not found)")
    return uri


def _report(args) -> None:
    from mlflow.tracking import MlflowClient

    from robustmsa.errors import ConfigError
    from robustmsa.evaluation.report import report_run

    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out}: exists and is not a directory")
    client = MlflowClient(_read_only_store(args.tracking_uri))
    # Refuses an unknown run or one with nothing to draw before anything is written.
    drawn = report_run(client, args.run_id, out_dir=args.out)
    for split, paths in drawn.items():
        where = f"figures/{split}/ of run {args.run_id}"
        print(f"{split}: {len(paths)} figures logged to {where}")
        for path in paths:
            print(f"  {path}")


def _add_reproduce_command(sub) -> None:
    rep = sub.add_parser(
        "reproduce",
        help="re-train a logged trial and compare, or confirm it over seeds",
        description="Re-train the trial that RUN names (a study's parent: its selected trial; "
        "or any trial run) with its exact config and seed, in this process on the CPU, and "
        "compare the validation spectrum of its chosen epoch with the logged one (exit 0 when "
        "equal bit for bit, 1 when not). With --seeds N: a 'confirm' study instead, the config "
        "and the reference model re-trained with N training seeds each (paired), logged under "
        "a new parent run with the mean, standard deviation and 95 %% interval of every summary "
        "and of the paired difference to the reference.",
    )
    rep.add_argument("--run-id", required=True, help="a study's parent run or a trial run")
    rep.add_argument("--seeds", type=int, help="confirm over N training seeds (N >= 2)")
    rep.add_argument(
        "--root", type=Path, default=Path.cwd(), help="folder for a confirm study's local outputs"
    )
    _add_tracking_uri(rep)


def _reproduce(args) -> int:
    from mlflow.tracking import MlflowClient

    from robustmsa.errors import ConfigError
    from robustmsa.search import reproduce

    if args.seeds is not None and args.seeds < 2:
        raise ConfigError(f"--seeds: a confirmation needs at least 2 seeds, got {args.seeds}")
    uri = _read_only_store(args.tracking_uri)
    client = MlflowClient(uri)
    if args.seeds is None:
        found = reproduce.reproduce_run(client, args.run_id)
        if found.identical:
            print(
                f"run {found.run_id}: reproduced bit for bit ({found.rows} validation rows of "
                f"the chosen epoch, {found.epochs} epochs re-trained)"
            )
            return 0
        print(
            f"run {found.run_id}: {found.differing} of {found.rows} validation rows differ "
            f"(largest difference {found.max_abs_diff:.3g}; first: {found.first_difference})"
        )
        return 1
    config = reproduce.confirm_study(client, args.run_id, args.seeds, uri)
    from robustmsa.search.console import quiet_console
    from robustmsa.search.study import run_study

    with quiet_console():  # only once the input is known good
        result = run_study(config, root=args.root)
    print(format_result(result, client.get_experiment(result.experiment_id).name))
    return 0


def _add_resume_command(sub) -> None:
    res = sub.add_parser(
        "resume",
        help="continue an interrupted or killed study",
        description="Continue the study whose parent run is PARENT (interrupted by Ctrl-C or "
        "SIGTERM, or its driver killed) with the config it ran with, in the folder it ran in: "
        "finished trials are kept, interrupted ones continue from their last checkpoints, in "
        "the same MLflow runs. Reads Tune's saved state (pickled) from the study's own storage: "
        "resume only studies whose storage you trust.",
    )
    res.add_argument("--run-id", required=True, help="the study's parent run")
    res.add_argument("--verbose", action="store_true", help="also show Ray's and Tune's logs")
    _add_tracking_uri(res)


def _resume(args) -> int:
    from mlflow.tracking import MlflowClient

    from robustmsa.search import resume
    from robustmsa.search.console import quiet_console
    from robustmsa.search.study import run_study

    uri = _read_only_store(args.tracking_uri)
    client = MlflowClient(uri)
    root = resume.study_root(client, args.run_id)
    config = resume.logged_config(client, args.run_id)
    if config.tracking.uri is None:
        os.environ["MLFLOW_TRACKING_URI"] = uri  # the store the run was found in
    try:
        with quiet_console(args.verbose):
            result = run_study(config, root=root, resume_run_id=args.run_id)
    except StudyInterrupted as exc:
        return _interrupted(exc)
    print(format_result(result, config.tracking.experiment))
    return 0


def _add_tracking_command(sub) -> None:
    tracking = sub.add_parser("tracking", help="the tracking store").add_subparsers(
        dest="tracking_command", required=True
    )
    sync = tracking.add_parser(
        "sync",
        help="replay the writes a tracking outage left in a spool",
        description="Replay, in order, the MLflow writes that studies spooled to local files "
        "while the tracking server was out of reach (a study replays its own when it ends; "
        "this is for a spool left behind, e.g. on a worker node). Each spool file is deleted "
        "once replayed; a failure stops at that write, to be run again later.",
    )
    sync.add_argument(
        "--spool",
        type=Path,
        default=Path(".robustmsa") / "spool",
        help="the spool folder (default: ./.robustmsa/spool, a study's under its --root)",
    )
    _add_tracking_uri(sync)


def _tracking_sync(args) -> int:
    from mlflow.tracking import MlflowClient

    from robustmsa.tracking.runs import check_tracking_uri, resolve_tracking_uri
    from robustmsa.tracking.spool import pending, sync

    if not args.spool.is_dir():
        raise ConfigError(f"--spool {args.spool}: no such folder")
    left = pending(args.spool)
    uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
    check_tracking_uri(uri)
    try:
        replayed = sync(args.spool, MlflowClient(uri))
    except Exception as exc:
        raise RobustMSAError(
            f"{uri}: replaying {args.spool} stopped ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); run it again once it answers"
        ) from exc
    print(f"replayed {replayed} writes from {len(left)} spool files of {args.spool} to {uri}")
    return 0


def _add_cluster_command(sub) -> None:
    cluster = sub.add_parser("cluster", help="cluster files").add_subparsers(
        dest="cluster_command", required=True
    )
    check = cluster.add_parser(
        "check",
        help="validate cluster-launcher YAMLs and KubeRay manifests offline",
        description="Check Ray cluster-launcher YAMLs (Ray's own validation, every node type "
        "declares its resources, the head has 0 CPUs) and KubeRay RayCluster/RayJob manifests "
        "(the CRD schemas of --crd-dir, unknown fields rejected). Prints 'ok FILE' per good file.",
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument(
        "--crd-dir",
        type=Path,
        help="KubeRay CRD schemas: CRD YAMLs (ray-operator/config/crd/bases) or the JSON of "
        "tests/cluster/fixtures/kuberay-<version>; needed for KubeRay manifests",
    )


def _run_cluster_command(args) -> int:
    from robustmsa.cluster import check_file, load_crd_schemas

    crd_schemas = load_crd_schemas(args.crd_dir) if args.crd_dir is not None else None
    status = 0
    for path in args.files:
        try:
            check_file(path, crd_schemas)
        except RobustMSAError as exc:
            status = _fail(str(exc))
            continue
        print(f"ok {path}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robustmsa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_evaluate_command(sub)
    _add_report_command(sub)
    _add_reproduce_command(sub)
    _add_resume_command(sub)
    _add_tracking_command(sub)
    _add_cluster_command(sub)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.command == "data":
            _run_data_command(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "report":
            _report(args)
        elif args.command == "reproduce":
            return _reproduce(args)
        elif args.command == "resume":
            return _resume(args)
        elif args.command == "tracking":
            return _tracking_sync(args)
        elif args.command == "cluster":
            return _run_cluster_command(args)
    except RobustMSAError as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # `robustmsa data inspect DIR | head`: the reader left early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
