"""Named evaluation protocols: each expands to a list of `EvalPoint`s (DESIGN.md §3).

This first version has ``clean``, ``missing`` and ``noise`` on all modalities at once. A curve
is built by `_curve(protocol, axis, scope, ...)`; per-single-modality curves are the same builder
with ``scope = "text"`` etc., and ``joint``/``patterns``/``random`` register further builders
in `PROTOCOLS` with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType

from robustmsa.data.batch import MODALITIES
from robustmsa.spectrum.operators import unit_interval, validate_point

# Levels are rounded to this many decimals so 0.1 * 3 is 0.3, not 0.30000000000000004.
LEVEL_DECIMALS = 6
DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0..1.0
ALL = "all"


def format_level(level: float) -> str:
    """At least two decimals, more only when needed: 0.3 -> "0.30", 0.125 -> "0.125"."""
    text = f"{level:.{LEVEL_DECIMALS}f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def point_key(protocol: str, modalities: str, level: float) -> str:
    """The stable id of a point, e.g. ``"missing/all/0.30"`` (also its random-stream key)."""
    return f"{protocol}/{modalities}/{format_level(level)}"


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation point: hashable, and its ``key`` is stable across runs and machines.

    ``point`` is a tuple of ``(modality, (λ, η))`` pairs in `MODALITIES` order (a mapping given
    at construction is normalised); ``dict(p.point)`` or `as_dict` gives the mapping that
    `apply_point` takes. ``modalities`` names the scope (``"all"`` or one modality); ``key``
    defaults to ``"{protocol}/{modalities}/{level:.2f}"``.
    """

    protocol: str
    modalities: str
    level: float
    point: tuple[tuple[str, tuple[float, float]], ...]
    key: str = field(default="")

    def __post_init__(self) -> None:
        order = {m: i for i, m in enumerate(MODALITIES)}
        checked = validate_point(self.point, MODALITIES)
        pairs = tuple(sorted(checked.items(), key=lambda kv: order[kv[0]]))
        level = round(unit_interval(f"{self.protocol} level", self.level), LEVEL_DECIMALS)
        object.__setattr__(self, "point", pairs)
        object.__setattr__(self, "level", level)
        if not self.key:
            object.__setattr__(self, "key", point_key(self.protocol, self.modalities, level))

    def as_dict(self) -> dict[str, tuple[float, float]]:
        return dict(self.point)


ProtocolBuilder = Callable[[Sequence[float], Sequence[str]], list[EvalPoint]]


def _clean(levels: Sequence[float], modalities: Sequence[str]) -> list[EvalPoint]:
    """One point, every modality at ``(0, 0)``; ``levels`` does not apply."""
    del levels
    return [EvalPoint("clean", ALL, 0.0, {m: (0.0, 0.0) for m in modalities})]


def _curve(
    protocol: str,
    axis: str,
    scope: str,
    levels: Sequence[float],
    modalities: Sequence[str],
) -> list[EvalPoint]:
    """One curve: ``axis`` ("noise" -> λ, "missing" -> η) at each level on the ``scope``
    modalities (``"all"`` at once, or one modality name); the others stay clean."""
    targets = tuple(modalities) if scope == ALL else (scope,)
    if scope != ALL and scope not in modalities:
        raise ValueError(f"{protocol}: scope {scope!r} unknown (known: {[ALL, *modalities]})")
    points = []
    for level in levels:
        pair = (level, 0.0) if axis == "noise" else (0.0, level)
        points.append(EvalPoint(protocol, scope, level, {m: pair for m in targets}))
    return points


PROTOCOLS: Mapping[str, ProtocolBuilder] = MappingProxyType(
    {
        "clean": _clean,
        "missing": partial(_curve, "missing", "missing", ALL),
        "noise": partial(_curve, "noise", "noise", ALL),
    }
)


def _levels(levels: Iterable[float] | None) -> tuple[float, ...]:
    if levels is None:
        return DEFAULT_LEVELS
    out = tuple(round(unit_interval("level", v), LEVEL_DECIMALS) for v in levels)
    if not out:
        raise ValueError("levels must not be empty")
    dupes = sorted({v for v in out if out.count(v) > 1})
    if dupes:
        raise ValueError(f"levels repeat {dupes}")
    return out


def build_points(
    protocol_names: str | Iterable[str],
    levels: Iterable[float] | None = None,
    *,
    modalities: Sequence[str] = MODALITIES,
) -> list[EvalPoint]:
    """The points of ``protocol_names`` in the given order (keys unique).

    ``levels`` (default 0.0..1.0 step 0.1) applies to the curve protocols; ``clean`` is always
    one point. A single name may be given as a str. ValueError names an unknown protocol and
    lists the known ones, or a repeated protocol name.
    """
    names = [protocol_names] if isinstance(protocol_names, str) else list(protocol_names)
    seen: set[str] = set()
    for name in names:
        if name not in PROTOCOLS:
            raise ValueError(f"protocol {name!r} unknown (known: {sorted(PROTOCOLS)})")
        if name in seen:
            raise ValueError(f"protocol {name!r} listed twice")
        seen.add(name)
    grid, mods = _levels(levels), tuple(modalities)
    return [p for name in names for p in PROTOCOLS[name](grid, mods)]
