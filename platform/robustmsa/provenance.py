"""Which copy of robustmsa this process runs: its path, version, git commit and source digest.

On a cluster the package travels with each job (`robustmsa.search.study.init_ray` ships it as a
``py_modules`` entry of the job's runtime environment), so every trial imports the job's copy,
never one installed on the node. A study prints this identity and logs it on its parent run, and
every trial logs its own (``robustmsa.code.*`` tags), so a stale copy shows as a different
digest. The digest is a SHA-256 over the package's ``.py`` files (relative path and bytes), the
same wherever the copy is unpacked; the commit is known only where the copy sits in a git
checkout (a job's uploaded working dir has no ``.git``).
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import robustmsa

PACKAGE_DIR = Path(robustmsa.__file__).resolve().parent


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 (hex, 16 characters) of the package's ``.py`` files, in path order."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        h.update(path.relative_to(package_dir).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def git_commit(package_dir: Path = PACKAGE_DIR) -> str | None:
    """The commit of the git checkout holding ``package_dir`` (``+dirty`` when its files
    differ from it), or None outside a checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(package_dir), "status", "--porcelain", "--", "."],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head


@functools.cache
def code_identity() -> dict[str, str]:
    """``{path, version, commit, digest}`` of the robustmsa this process imported (computed once
    per process); ``commit`` is ``unknown`` outside a git checkout."""
    return {
        "path": str(PACKAGE_DIR),
        "version": robustmsa.__version__,
        "commit": git_commit() or "unknown",
        "digest": source_digest(),
    }


def code_tags() -> dict[str, str]:
    """`code_identity` as MLflow tags ``robustmsa.code.<key>``."""
    return {f"robustmsa.code.{k}": v for k, v in code_identity().items()}


def describe() -> str:
    """One line for the console: which copy a study runs."""
    c = code_identity()
    return f"robustmsa {c['version']} from {c['path']} (commit {c['commit']}, digest {c['digest']})"
