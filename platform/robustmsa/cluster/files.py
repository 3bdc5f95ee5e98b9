"""Reading cluster files: YAML documents loaded safely, and key paths written for messages.

A file that is missing, unreadable or malformed YAML is a ``ConfigError`` naming the file (and
the line, for malformed YAML). Only ``yaml.safe_load_all`` is used: no tags, no objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from robustmsa.errors import ConfigError

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")


def load_yaml_documents(path: Path) -> list:
    """The file's YAML documents, empty ones (``---`` with nothing after it) dropped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    return [d for d in docs if d is not None]


def join_path(prefix: str, key: str | int) -> str:
    """The path of ``key`` inside ``prefix`` (``""`` for the top level): dotted keys, ``[i]``
    for list items, ``['a.b']`` for keys that would read ambiguously (dots, spaces, slashes)."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if _PLAIN_KEY.match(str(key)):
        return f"{prefix}.{key}" if prefix else str(key)
    return f"{prefix}[{str(key)!r}]"


def format_path(segments: Iterable[str | int]) -> str:
    """``spec.workerGroupSpecs[1].minReplica`` from its segments; ``(top level)`` if none."""
    out = ""
    for seg in segments:
        out = join_path(out, seg)
    return out or "(top level)"
