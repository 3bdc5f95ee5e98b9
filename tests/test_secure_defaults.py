"""Secure defaults, checked on the code and on its behaviour.

- no unpickling without the trust flag: `pickle.load` only behind ``trust_pickle``, `np.load`
  with ``allow_pickle=False``, every `torch.load` with ``weights_only=True`` (a checkpoint
  holding code is refused, by name);
- YAML only through ``yaml.safe_load`` / ``safe_dump``;
- servers the project starts or prints bind to 127.0.0.1 (the cluster's MLflow server, which
  the nodes must reach, is the documented exception);
- no password in a config value (they are logged as parameters and artifacts); the fault
  drill (tests/integration/test_faults.py) checks that credentials given through the
  environment appear in no parameter, tag, artifact or log of a study.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from paths import REPO
from robustmsa.config import from_dict
from robustmsa.errors import ConfigError, RobustMSAError
from robustmsa.training.checkpoint import BEST_MODEL_FILE, load_weights

CODE_DIRS = ["platform/robustmsa", "studies", "benchmarks", "scripts", "notebooks"]


def python_files() -> list[Path]:
    return sorted(p for d in CODE_DIRS for p in (REPO / d).rglob("*.py"))


def calls(tree: ast.AST):
    """``(dotted name, call)`` of every call in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            yield ".".join(reversed(parts)), node


def keyword(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


def enclosing_functions(tree: ast.AST) -> dict[ast.AST, str]:
    owner = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                owner.setdefault(node, fn.name)
    return owner


def test_the_scan_reads_the_code():
    names = {p.name for p in python_files()}
    assert {"checkpoint.py", "mmsa.py", "cli.py"} <= names


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_is_unpickled_or_loaded_unsafely(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    owner = enclosing_functions(tree)
    for name, call in calls(tree):
        where = f"{path.relative_to(REPO)}:{call.lineno}"
        if name == "torch.load":
            assert keyword(call, "weights_only") is True, (
                f"{where}: torch.load without weights_only=True"
            )
        elif name in ("np.load", "numpy.load"):
            assert keyword(call, "allow_pickle") is False, f"{where}: np.load may unpickle"
        elif name in ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads"):
            # The one place: MMSA's feature pickles, after the caller passed trust_pickle=True.
            assert owner.get(call) == "_load_trusted_pickle", (
                f"{where}: unpickling without the trust flag"
            )
        elif name in (
            "yaml.load",
            "yaml.unsafe_load",
            "yaml.full_load",
            "yaml.dump",
            "yaml.unsafe_dump",
        ):
            pytest.fail(f"{where}: {name} (use yaml.safe_load / yaml.safe_dump)")


def test_the_trusted_unpickle_checks_the_flag_next_to_the_load():
    from robustmsa.data.importers import mmsa

    with pytest.raises(RobustMSAError, match="trust-pickle"):
        mmsa._load_trusted_pickle(REPO / "README.md", trust_pickle=False)


class Payload:
    """Something a pickle-based checkpoint could carry: code that runs on load."""

    def __reduce__(self):
        return (print, ("ran code from a checkpoint",))


def test_a_checkpoint_holding_code_is_refused_by_name(tmp_path, capsys):
    torch.save({"weight": torch.zeros(2), "payload": Payload()}, tmp_path / BEST_MODEL_FILE)
    with pytest.raises(RobustMSAError, match=BEST_MODEL_FILE):
        load_weights(tmp_path)
    assert "ran code" not in capsys.readouterr().out


def test_the_printed_mlflow_ui_command_binds_to_loopback():
    from robustmsa.cli import format_result
    from robustmsa.search.kinds.base import StudyResult

    result = StudyResult("p" * 32, "1", "sqlite:////tmp/x/mlruns.db", "/tmp/x/ray", "search")
    line = next(ln for ln in format_result(result, "e").splitlines() if " ui " in ln)
    assert "--host 127.0.0.1" in line


def test_the_cluster_mlflow_server_is_the_documented_exception():
    script = (REPO / "cluster" / "start_mlflow.sh").read_text()
    assert "--host 0.0.0.0" in script
    assert "keep that port closed to the internet" in script


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tracking.uri", "http://alice:s3cret@127.0.0.1:5000"),
        ("data.path", "s3://AKIAXXXX:s3cret@bucket/data"),
        ("study.storage_path", "s3://AKIAXXXX:s3cret@bucket/ray"),
    ],
)
def test_a_password_in_a_config_value_is_refused(key, value):
    section, field = key.split(".")
    raw = {section: {field: value}}
    if section == "data":
        raw["data"]["source"] = "parquet"
    with pytest.raises(ConfigError, match=f"{key}: holds a password") as err:
        from_dict(raw)
    assert "s3cret" not in str(err.value)


def test_a_user_name_alone_is_not_a_secret():
    assert from_dict({"tracking": {"uri": "http://alice@127.0.0.1:5000"}}).tracking.uri
