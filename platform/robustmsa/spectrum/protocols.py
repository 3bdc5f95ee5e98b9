"""Named evaluation protocols: each expands to a list of `EvalPoint`s (docs/architecture.md §3).

- ``clean``: one point, every modality at ``(0, 0)``.
- ``missing`` / ``noise``: η (resp. λ) at each level (default 0.0..1.0 step 0.1) on the scope's
  modalities, the others clean. Scopes: ``all`` (every modality at once) and each single
  modality.
- ``joint``: λ = η = t on the scope's modalities; same scopes.
- ``patterns``: the non-empty subsets of the modalities (7 for three), the others removed at
  ``(0, 1)``; ``modalities`` names the AVAILABLE subset, e.g. ``"text+audio"``; level 0.0.
- ``random``: per-sample mixed points, one per draw ``k`` (default 0, 1, 2): every sample and
  modality gets its own ``λ, η ~ U(0, 1)`` from `random_rates`, a pure function of (dataset
  digest, sample id, draw, seed); ``modalities`` is ``"draw<k>"``, level 0.0.
- ``grid``: for the λ × η heat map, per single modality, λ and η on a coarse grid (default
  0, 0.25, 0.5, 0.75, 1); ``modalities`` is ``"<m>/eta=<η>"`` and ``level`` is λ, so each
  fixed-η row is a λ-curve. In no default.

A name may carry a scope: ``missing@all``, ``noise@text``, ``grid@audio`` select one curve
(family); the bare name means every scope. `check_protocol_names` validates names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from types import MappingProxyType

import numpy as np
import torch

from robustmsa.data.batch import MODALITIES
from robustmsa.spectrum.keys import stream
from robustmsa.spectrum.operators import Rate, needs_draws, unit_interval, validate_point

# Levels are rounded to this many decimals so 0.1 * 3 is 0.3, not 0.30000000000000004.
LEVEL_DECIMALS = 6
DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))  # 0.0..1.0
GRID_LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
RANDOM_DRAWS: tuple[int, ...] = (0, 1, 2)
ALL = "all"
SCOPE_SEP = "@"
PATTERN_SEP = "+"
# Stream key of the per-sample rates of the `random` protocol; the corruption itself uses the
# evaluator's shared draws, so only the rates are specific to the protocol.
RANDOM_STREAM_KEY = "random"
# Protocols whose points are a set (not a curve over a level): summarised by mean and worst.
POINT_SET_PROTOCOLS: tuple[str, ...] = ("patterns", "random")


def format_level(level: float) -> str:
    """At least two decimals, more only when needed: 0.3 -> "0.30", 0.125 -> "0.125"."""
    text = f"{level:.{LEVEL_DECIMALS}f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def point_key(protocol: str, modalities: str, level: float) -> str:
    """The stable id of a point, e.g. ``"missing/all/0.30"``."""
    return f"{protocol}/{modalities}/{format_level(level)}"


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation point: hashable, and its ``key`` is stable across runs and machines.

    ``point`` is a tuple of ``(modality, (λ, η))`` pairs in `MODALITIES` order (a mapping given
    at construction is normalised); ``dict(p.point)`` or `as_dict` gives the mapping that
    `apply_point` takes. ``modalities`` names the scope (``"all"``, one modality, a pattern,
    ...); ``key`` defaults to ``"{protocol}/{modalities}/{level:.2f}"``.

    ``random_draw`` set to ``k`` makes this the per-sample random draw ``k``: the nominal pairs
    (``(0, 0)``) only name the modalities, and `resolve` gives each sample its own rates.
    """

    protocol: str
    modalities: str
    level: float
    point: tuple[tuple[str, tuple[float, float]], ...]
    key: str = field(default="")
    random_draw: int | None = None

    def __post_init__(self) -> None:
        order = {m: i for i, m in enumerate(MODALITIES)}
        checked = validate_point(self.point, MODALITIES)
        pairs = tuple(sorted(checked.items(), key=lambda kv: order[kv[0]]))
        level = round(unit_interval(f"{self.protocol} level", self.level), LEVEL_DECIMALS)
        object.__setattr__(self, "point", pairs)
        object.__setattr__(self, "level", level)
        if self.random_draw is not None:
            _check_draw(self.random_draw)
        if not self.key:
            object.__setattr__(self, "key", point_key(self.protocol, self.modalities, level))

    def as_dict(self) -> dict[str, tuple[float, float]]:
        return dict(self.point)

    @property
    def drawn_modalities(self) -> tuple[str, ...]:
        """The modalities whose corruption needs random numbers (`spectrum.draw`) at this point:
        every modality of a random draw (its rates are in (0, 1) almost surely), else those
        corrupted but not removed."""
        if self.random_draw is not None:
            return tuple(m for m, _ in self.point)
        return tuple(m for m, (lam, eta) in self.point if needs_draws(lam, eta))

    def resolve(
        self, ids: Sequence[str], *, digest: str, seed: int
    ) -> dict[str, tuple[Rate, Rate]]:
        """The point `apply_point` takes for a batch of samples ``ids``: `as_dict` for a fixed
        point; for a random draw, per modality float32 ``(B,)`` λ and η from `random_rates`."""
        if self.random_draw is None:
            return self.as_dict()
        return {
            m: random_rates(ids, m, digest=digest, seed=seed, draw=self.random_draw)
            for m, _ in self.point
        }


def random_rates(
    ids: Sequence[str], modality: str, *, digest: str, seed: int, draw: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(λ, η)`` of random draw ``draw`` for ``modality``: two float32 ``(B,)``
    tensors in ``[0, 1)``. Sample ``i``'s pair comes from its own keyed stream
    ``(digest, ids[i], "random", seed, modality, "rates<draw>")``, so it does not depend on the
    batch, its order or size."""
    _check_draw(draw)
    pairs = np.empty((len(ids), 2), dtype=np.float32)
    for i, sid in enumerate(ids):
        # float32 draws: a float64 uniform just below 1 could round up to η = 1.
        rng = stream(digest, sid, RANDOM_STREAM_KEY, seed, modality, f"rates{draw}")
        pairs[i] = rng.random(2, dtype=np.float32)
    rates = torch.from_numpy(pairs)
    return rates[:, 0].contiguous(), rates[:, 1].contiguous()


def _check_draw(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"random draw must be an int >= 0, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class BuildSpec:
    """What protocols are expanded over: curve ``levels``, the ``modalities``, the ``draws`` of
    ``random`` and the coarse ``grid_levels`` of ``grid``."""

    levels: tuple[float, ...]
    modalities: tuple[str, ...]
    draws: tuple[int, ...]
    grid_levels: tuple[float, ...]


@dataclass(frozen=True)
class Protocol:
    """A named protocol: ``build(scope, spec)`` gives its points for one scope (``None`` for a
    protocol without scopes); ``scopes(modalities)`` lists its scopes, empty when it has none."""

    build: Callable[[str | None, BuildSpec], list[EvalPoint]]
    scopes: Callable[[Sequence[str]], tuple[str, ...]]


def _no_scopes(modalities: Sequence[str]) -> tuple[str, ...]:
    return ()


def _all_and_each(modalities: Sequence[str]) -> tuple[str, ...]:
    return (ALL, *modalities)


def _each(modalities: Sequence[str]) -> tuple[str, ...]:
    return tuple(modalities)


def _clean(scope: str | None, spec: BuildSpec) -> list[EvalPoint]:
    """One point, every modality at ``(0, 0)``; levels do not apply."""
    return [EvalPoint("clean", ALL, 0.0, {m: (0.0, 0.0) for m in spec.modalities})]


def _curve(
    protocol: str, pair: Callable[[float], tuple[float, float]]
) -> Callable[[str | None, BuildSpec], list[EvalPoint]]:
    """A curve builder: ``pair(level)`` is the ``(λ, η)`` on the scope's modalities (``"all"``
    at once, or one modality); the others stay clean."""

    def build(scope: str | None, spec: BuildSpec) -> list[EvalPoint]:
        assert scope is not None  # build_points passes a scope to every scoped protocol
        targets = spec.modalities if scope == ALL else (scope,)
        return [
            EvalPoint(protocol, scope, level, {m: pair(level) for m in targets})
            for level in spec.levels
        ]

    return build


def _patterns(scope: str | None, spec: BuildSpec) -> list[EvalPoint]:
    """Every non-empty subset of the modalities available, the rest removed, by subset size
    then `MODALITIES` order (text, audio, vision, text+audio, ..., text+audio+vision)."""
    points = []
    for size in range(1, len(spec.modalities) + 1):
        for kept in combinations(spec.modalities, size):
            pairs = {m: ((0.0, 0.0) if m in kept else (0.0, 1.0)) for m in spec.modalities}
            points.append(EvalPoint("patterns", PATTERN_SEP.join(kept), 0.0, pairs))
    return points


def _random(scope: str | None, spec: BuildSpec) -> list[EvalPoint]:
    nominal = {m: (0.0, 0.0) for m in spec.modalities}
    return [EvalPoint("random", f"draw{k}", 0.0, nominal, random_draw=k) for k in spec.draws]


def _grid(scope: str | None, spec: BuildSpec) -> list[EvalPoint]:
    """λ × η on ``spec.grid_levels`` for the single modality ``scope``: one λ-row per η."""
    assert scope is not None
    return [
        EvalPoint("grid", f"{scope}/eta={format_level(eta)}", lam, {scope: (lam, eta)})
        for eta in spec.grid_levels
        for lam in spec.grid_levels
    ]


PROTOCOLS: Mapping[str, Protocol] = MappingProxyType(
    {
        "clean": Protocol(_clean, _no_scopes),
        "missing": Protocol(_curve("missing", lambda t: (0.0, t)), _all_and_each),
        "noise": Protocol(_curve("noise", lambda t: (t, 0.0)), _all_and_each),
        "joint": Protocol(_curve("joint", lambda t: (t, t)), _all_and_each),
        "patterns": Protocol(_patterns, _no_scopes),
        "random": Protocol(_random, _no_scopes),
        "grid": Protocol(_grid, _each),
    }
)


def check_protocol_names(
    names: str | Iterable[str], modalities: Sequence[str] = MODALITIES
) -> list[tuple[str, str | None]]:
    """``names`` parsed into ``(protocol, scope or None)``; ValueError for an unknown protocol
    (listing the known ones), an unknown scope or a scope on a protocol without scopes (listing
    the protocol's scopes), or a name repeated or overlapping another (``missing`` and
    ``missing@text`` would give the same points twice)."""
    listed = [names] if isinstance(names, str) else list(names)
    parsed: list[tuple[str, str | None]] = []
    for name in listed:
        if not isinstance(name, str):
            raise ValueError(f"protocol names must be strings, got {name!r}")
        base, sep, scope = name.partition(SCOPE_SEP)
        if base not in PROTOCOLS:
            raise ValueError(f"protocol {name!r} unknown (known: {sorted(PROTOCOLS)})")
        known = PROTOCOLS[base].scopes(modalities)
        if sep and scope not in known:
            allowed = f"its scopes: {list(known)}" if known else "it takes no scope"
            raise ValueError(f"protocol {name!r}: scope {scope!r} unknown ({allowed})")
        parsed.append((base, scope if sep else None))
    for i, (base, scope) in enumerate(parsed):
        for other_base, other_scope in parsed[:i]:
            overlap = scope is None or other_scope is None or scope == other_scope
            if base == other_base and overlap:
                raise ValueError(f"protocol {listed[i]!r} listed twice (or overlaps another name)")
    return parsed


def _levels(name: str, levels: Iterable[float]) -> tuple[float, ...]:
    out = tuple(round(unit_interval(name, v), LEVEL_DECIMALS) for v in levels)
    if not out:
        raise ValueError(f"{name} must not be empty")
    dupes = sorted({v for v in out if out.count(v) > 1})
    if dupes:
        raise ValueError(f"{name} repeat {dupes}")
    return out


def _draws(draws: Iterable[int]) -> tuple[int, ...]:
    out = tuple(_check_draw(k) for k in draws)
    if not out:
        raise ValueError("draws must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"draws repeat: {list(out)}")
    return out


def build_points(
    protocol_names: str | Iterable[str],
    levels: Iterable[float] | None = None,
    *,
    modalities: Sequence[str] = MODALITIES,
    draws: Iterable[int] = RANDOM_DRAWS,
    grid_levels: Iterable[float] = GRID_LEVELS,
) -> list[EvalPoint]:
    """The points of ``protocol_names`` in the given order (keys unique); see the module
    docstring for the protocols and the ``name@scope`` form (a bare name: every scope, in the
    order ``all``, then `MODALITIES`).

    ``levels`` (default 0.0..1.0 step 0.1) applies to the curve protocols, ``draws`` to
    ``random`` and ``grid_levels`` to ``grid``. A single name may be given as a str. Names are
    checked by `check_protocol_names`; repeated levels or draws raise ValueError.
    """
    mods = tuple(modalities)
    unknown = [m for m in mods if m not in MODALITIES]
    if unknown or not mods or len(set(mods)) != len(mods):
        raise ValueError(f"modalities must be distinct names of {list(MODALITIES)}, got {mods}")
    parsed = check_protocol_names(protocol_names, mods)
    spec = BuildSpec(
        levels=DEFAULT_LEVELS if levels is None else _levels("levels", levels),
        modalities=mods,
        draws=_draws(draws),
        grid_levels=_levels("grid_levels", grid_levels),
    )
    points: list[EvalPoint] = []
    for base, scope in parsed:
        protocol = PROTOCOLS[base]
        scopes = protocol.scopes(mods) if scope is None else (scope,)
        for s in scopes or (None,):
            points.extend(protocol.build(s, spec))
    keys = [p.key for p in points]
    if len(set(keys)) != len(keys):  # a guard on the builders: keys identify points and rows
        raise ValueError(f"point keys repeat: {sorted({k for k in keys if keys.count(k) > 1})}")
    return points
