"""One line from a ``jsonschema.ValidationError``: the key path and what is wrong with it.

jsonschema's own text repeats the offending instance and the whole sub-schema (often hundreds
of lines for a node type or a pod template). This keeps the path, the rule and a short view of
the value: ``available_node_types.gpu_worker.resources.GPU: expected integer, got 0.5``.
"""

from __future__ import annotations

import re

from robustmsa.cluster.files import format_path, join_path

_MAX_VALUE = 60


def short(value) -> str:
    """``repr`` of a value, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def unknown_keys(instance: dict, schema: dict) -> list[str]:
    """Keys of ``instance`` that neither ``properties`` nor ``patternProperties`` allow."""
    known = schema.get("properties", {})
    patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
    return sorted(
        str(k) for k in instance if k not in known and not any(p.search(str(k)) for p in patterns)
    )


def _type_name(value) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def condense(error) -> str:
    """``PATH: problem`` for a jsonschema ``ValidationError``, on one line."""
    path = format_path(error.absolute_path)
    rule, expected, value = error.validator, error.validator_value, error.instance
    if rule == "additionalProperties" and isinstance(value, dict):
        extra = unknown_keys(value, error.schema)
        if extra:
            where = join_path("" if path == "(top level)" else path, extra[0])
            more = f" (and {', '.join(extra[1:])})" if len(extra) > 1 else ""
            return f"{where}: unknown key{more}"
    if rule == "required":
        missing = re.match(r"'(.*)' is a required property", error.message)
        name = missing.group(1) if missing else error.message
        return f"{path}: missing required key '{name}'"
    if rule == "type":
        want = " or ".join(expected) if isinstance(expected, list) else expected
        got = "null" if value is None else f"{_type_name(value)} {short(value)}"
        return f"{path}: expected {want}, got {got}"
    if rule == "enum":
        return f"{path}: must be one of {', '.join(map(str, expected))}, got {short(value)}"
    if rule in ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"):
        return f"{path}: {rule} is {expected}, got {short(value)}"
    if rule == "pattern":
        return f"{path}: {short(value)} does not match the pattern {expected}"
    first = error.message.splitlines()[0] if error.message else rule
    return f"{path}: {first if len(first) <= 160 else first[:157] + '...'}"
