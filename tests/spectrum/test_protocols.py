"""Named evaluation protocols and their points."""

from __future__ import annotations

import dataclasses
from itertools import combinations

import numpy as np
import pytest
import torch
from robustmsa.data.batch import MODALITIES
from robustmsa.spectrum import PROTOCOLS, EvalPoint, apply_point, build_points
from robustmsa.spectrum.protocols import check_protocol_names, random_rates

SCOPES = ("all", *MODALITIES)
ALL_DEFAULT = ["clean", "missing", "noise", "joint", "patterns", "random"]


def test_point_counts():
    assert len(build_points(["clean"])) == 1
    for curve in ("missing", "noise", "joint"):
        assert len(build_points(curve)) == 4 * 11  # scopes all/text/audio/vision x 11 levels
        assert len(build_points(f"{curve}@all")) == 11
        assert len(build_points(f"{curve}@vision")) == 11
    assert len(build_points("patterns")) == 7
    assert len(build_points("random")) == 3
    assert len(build_points("grid")) == 3 * 5 * 5
    assert len(build_points("grid@text")) == 25
    assert len(build_points(["clean", "missing@all", "noise@all"])) == 23
    assert len(build_points(ALL_DEFAULT)) == 1 + 3 * 44 + 7 + 3
    assert set(PROTOCOLS) == {"clean", "missing", "noise", "joint", "patterns", "random", "grid"}


def test_keys_unique_and_stable():
    points = build_points([*ALL_DEFAULT, "grid"])
    keys = [p.key for p in points]
    assert len(set(keys)) == len(keys)
    assert len(set(points)) == len(points)  # hashable
    assert keys[0] == "clean/all/0.00"
    for key in (
        "missing/all/0.30",
        "noise/all/1.00",
        "missing/text/0.10",
        "joint/audio/0.50",
        "patterns/text+audio/0.00",
        "patterns/text+audio+vision/0.00",
        "random/draw2/0.00",
        "grid/vision/eta=0.75/0.25",
    ):
        assert key in keys, key
    # Same names, same keys in the same order: keys name rows, MLflow metrics and streams.
    assert [p.key for p in build_points([*ALL_DEFAULT, "grid"])] == keys


def test_bare_name_is_every_scope_in_order():
    points = build_points("missing", levels=[0.0, 0.5])
    assert [(p.modalities, p.level) for p in points] == [
        (s, lv) for s in SCOPES for lv in (0.0, 0.5)
    ]
    scoped = [p for s in SCOPES for p in build_points(f"missing@{s}", levels=[0.0, 0.5])]
    assert scoped == points


def test_levels_have_no_float_drift():
    levels = [p.level for p in build_points("missing@all")]
    assert levels == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    custom = build_points("noise@all", levels=[0.1 * 3, 0.125])
    assert [p.level for p in custom] == [0.3, 0.125]
    assert [p.key for p in custom] == ["noise/all/0.30", "noise/all/0.125"]


def test_points_cover_all_modalities_on_their_axis():
    (p,) = [q for q in build_points("missing") if q.key == "missing/all/0.30"]
    assert p.protocol == "missing" and p.modalities == "all"
    assert p.as_dict() == {m: (0.0, 0.3) for m in MODALITIES}
    (q,) = [q for q in build_points("noise") if q.key == "noise/all/0.70"]
    assert dict(q.point) == {m: (0.7, 0.0) for m in MODALITIES}
    (c,) = build_points("clean")
    assert c.level == 0.0 and c.as_dict() == {m: (0.0, 0.0) for m in MODALITIES}


@pytest.mark.parametrize("modality", MODALITIES)
def test_single_modality_scopes_leave_the_others_clean(modality):
    for protocol, pair in (
        ("missing", lambda t: (0.0, t)),
        ("noise", lambda t: (t, 0.0)),
        ("joint", lambda t: (t, t)),
    ):
        points = build_points(f"{protocol}@{modality}")
        assert {p.modalities for p in points} == {modality}
        for p in points:
            assert p.as_dict() == {modality: pair(p.level)}
            assert p.key == f"{protocol}/{modality}/{p.level:.2f}"


def test_joint_all_sets_both_rates():
    (p,) = [q for q in build_points("joint@all") if q.level == 0.4]
    assert p.as_dict() == {m: (0.4, 0.4) for m in MODALITIES}


def test_patterns_name_the_available_subset():
    points = build_points("patterns")
    assert [p.modalities for p in points] == [
        "text",
        "audio",
        "vision",
        "text+audio",
        "text+vision",
        "audio+vision",
        "text+audio+vision",
    ]
    subsets = {frozenset(c) for r in (1, 2, 3) for c in combinations(MODALITIES, r)}
    assert {frozenset(p.modalities.split("+")) for p in points} == subsets
    for p in points:
        kept = set(p.modalities.split("+"))
        assert p.level == 0.0
        assert p.as_dict() == {m: (0.0, 0.0) if m in kept else (0.0, 1.0) for m in MODALITIES}
        assert p.drawn_modalities == ()  # removal and clean need no random numbers


def test_patterns_over_fewer_modalities():
    points = build_points("patterns", modalities=("text", "vision"))
    assert [p.modalities for p in points] == ["text", "vision", "text+vision"]
    assert points[0].as_dict() == {"text": (0.0, 0.0), "vision": (0.0, 1.0)}


def test_patterns_drive_presence(tiny_valid):
    batch = tiny_valid.batch(list(range(8)))
    digest = tiny_valid.meta.digest
    for p in build_points("patterns"):
        out = apply_point(batch, p.point, seed=0, stream_key="eval", digest=digest)
        kept = p.modalities.split("+")
        for m in MODALITIES:
            if m in kept:
                assert torch.equal(out.present[m], batch.present[m])
                assert torch.equal(out.features[m], batch.features[m])
            else:
                assert not out.present[m].any()


def test_random_points_name_their_draws():
    points = build_points("random")
    assert [(p.modalities, p.level, p.random_draw) for p in points] == [
        ("draw0", 0.0, 0),
        ("draw1", 0.0, 1),
        ("draw2", 0.0, 2),
    ]
    assert [p.key for p in points] == [f"random/draw{k}/0.00" for k in (0, 1, 2)]
    for p in points:
        assert p.drawn_modalities == MODALITIES
    assert [p.random_draw for p in build_points("random", draws=[5, 7])] == [5, 7]
    # Fixed points have no draw and resolve to their nominal pairs.
    (c,) = build_points("clean")
    assert c.random_draw is None
    assert c.resolve(["a", "b"], digest="d", seed=0) == c.as_dict()


IDS = [f"s{i:05d}" for i in range(400)]


def test_random_rates_are_per_sample_and_uniform():
    lam, eta = random_rates(IDS, "audio", digest="dg", seed=3, draw=0)
    assert lam.dtype == eta.dtype == torch.float32
    assert lam.shape == eta.shape == (len(IDS),)
    for r in (lam, eta):
        assert float(r.min()) >= 0.0 and float(r.max()) < 1.0
        assert len(set(r.tolist())) == len(IDS)  # every sample its own rate
        # 400 draws of U(0, 1): mean within 5 standard errors (0.0144 each) of 1/2, and every
        # tenth of [0, 1) hit.
        assert abs(float(r.mean()) - 0.5) < 5 * (1 / 12 / len(IDS)) ** 0.5
        assert len(set((r * 10).long().tolist())) == 10
    assert not torch.equal(lam, eta)


def test_random_rates_are_a_function_of_sample_draw_seed_and_modality():
    lam, eta = random_rates(IDS, "text", digest="dg", seed=0, draw=1)
    perm = np.random.default_rng(0).permutation(len(IDS))[:37]
    lam_p, eta_p = random_rates([IDS[i] for i in perm], "text", digest="dg", seed=0, draw=1)
    assert torch.equal(lam_p, lam[perm]) and torch.equal(eta_p, eta[perm])
    for other in (
        {"digest": "dg", "seed": 1, "draw": 1, "modality": "text"},
        {"digest": "dg", "seed": 0, "draw": 2, "modality": "text"},
        {"digest": "other", "seed": 0, "draw": 1, "modality": "text"},
        {"digest": "dg", "seed": 0, "draw": 1, "modality": "vision"},
    ):
        modality = other.pop("modality")
        lam_o, _ = random_rates(IDS, modality, **other)
        assert not torch.allclose(lam_o, lam), other


def test_random_point_resolves_to_per_sample_rates_apply_point_takes(tiny_valid):
    (p,) = build_points("random", draws=[1])
    batch = tiny_valid.batch(list(range(12)))
    digest = tiny_valid.meta.digest
    resolved = p.resolve(batch.ids, digest=digest, seed=9)
    assert set(resolved) == set(MODALITIES)
    for m in MODALITIES:
        assert all(
            torch.equal(a, b)
            for a, b in zip(
                resolved[m], random_rates(batch.ids, m, digest=digest, seed=9, draw=1), strict=True
            )
        )
    out = apply_point(batch, resolved, seed=9, stream_key="eval", digest=digest)
    for m in MODALITIES:
        lam, eta = resolved[m]
        assert torch.equal(out.reliability[m], torch.stack([lam, eta], 1))
    # Each sample corrupted at its own rates: sample i alone at the float point (λ_i, η_i)
    # gives the same features.
    for i in (0, 5, 11):
        alone = batch.subset(torch.tensor([i]))
        point = {m: (float(resolved[m][0][i]), float(resolved[m][1][i])) for m in MODALITIES}
        single = apply_point(alone, point, seed=9, stream_key="eval", digest=digest)
        for m in MODALITIES:
            t = int(single.masks[m].shape[1])
            assert torch.equal(single.masks[m][0], out.masks[m][i, :t])
            assert torch.equal(single.features[m][0], out.features[m][i, :t])
            assert bool(single.present[m][0]) == bool(out.present[m][i])


def test_grid_rows_are_lambda_curves_at_fixed_eta():
    points = build_points("grid@audio")
    assert len(points) == 25
    rows = {}
    for p in points:
        rows.setdefault(p.modalities, []).append(p.level)
        eta = float(p.modalities.split("=")[1])
        assert p.as_dict() == {"audio": (p.level, eta)}
    assert list(rows) == [f"audio/eta={e}" for e in ("0.00", "0.25", "0.50", "0.75", "1.00")]
    assert all(levels == [0.0, 0.25, 0.5, 0.75, 1.0] for levels in rows.values())
    coarse = build_points("grid@text", grid_levels=[0.0, 0.5])
    assert [(p.modalities, p.level) for p in coarse] == [
        ("text/eta=0.00", 0.0),
        ("text/eta=0.00", 0.5),
        ("text/eta=0.50", 0.0),
        ("text/eta=0.50", 0.5),
    ]


def test_grid_is_in_no_default():
    assert not any(p.protocol == "grid" for p in build_points(ALL_DEFAULT))


def test_eval_point_is_frozen_and_normalised():
    p = EvalPoint("missing", "text", 0.1 + 0.2, {"text": (0.0, 0.3)})
    assert p.level == 0.3 and p.key == "missing/text/0.30"
    assert p.point == (("text", (0.0, 0.3)),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.level = 0.5
    with pytest.raises(ValueError, match="smell"):
        EvalPoint("missing", "all", 0.3, {"smell": (0.0, 0.3)})
    with pytest.raises(ValueError, match=r"random draw.*-1"):
        EvalPoint("random", "draw", 0.0, {"text": (0.0, 0.0)}, random_draw=-1)


def test_unknown_protocol_names_it_and_lists_known():
    with pytest.raises(ValueError) as info:
        build_points(["clean", "bogus"])
    msg = str(info.value)
    assert "bogus" in msg
    assert all(name in msg for name in PROTOCOLS)


@pytest.mark.parametrize(
    "name,needles",
    [
        ("missing@smell", ["missing@smell", "'smell'", "all", "text", "audio", "vision"]),
        ("grid@all", ["grid@all", "'all'", "text"]),
        ("clean@all", ["clean@all", "no scope"]),
        ("patterns@text", ["patterns@text", "no scope"]),
        ("noise@", ["noise@", "''"]),
    ],
)
def test_bad_scope_names_it_and_lists_scopes(name, needles):
    with pytest.raises(ValueError) as info:
        check_protocol_names(["clean", name])
    assert all(n in str(info.value) for n in needles), str(info.value)


def test_check_protocol_names_parses_scopes():
    assert check_protocol_names(["clean", "missing@all", "noise@text", "joint", "grid@audio"]) == [
        ("clean", None),
        ("missing", "all"),
        ("noise", "text"),
        ("joint", None),
        ("grid", "audio"),
    ]
    assert check_protocol_names("patterns") == [("patterns", None)]
    assert check_protocol_names(["missing@text", "missing@audio"]) == [
        ("missing", "text"),
        ("missing", "audio"),
    ]


@pytest.mark.parametrize(
    "names", [["clean", "clean"], ["missing", "missing@text"], ["noise@all", "noise@all"]]
)
def test_repeated_or_overlapping_names(names):
    with pytest.raises(ValueError, match="twice"):
        build_points(names)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"levels": [0.1, 0.1]}, "repeat"),
        ({"levels": [2]}, "2"),
        ({"levels": []}, "levels must not be empty"),
        ({"draws": [1, 1]}, "draws repeat"),
        ({"draws": [-1]}, "-1"),
        ({"draws": [True]}, "True"),
        ({"grid_levels": [0.5, 1.5]}, r"grid_levels.*1\.5"),
        ({"modalities": ("text", "smell")}, "smell"),
    ],
)
def test_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        build_points([*ALL_DEFAULT, "grid"], **kwargs)


def test_points_drive_apply_point(tiny_valid):
    batch = tiny_valid.batch(list(range(6)))
    digest = tiny_valid.meta.digest
    for p in build_points(["clean", "missing", "joint@all"]):
        out = apply_point(batch, p.point, seed=1, stream_key="eval", digest=digest)
        if p.level == 1.0:
            gone = MODALITIES if p.modalities == "all" else (p.modalities,)
            assert not any(out.present[m].any() for m in gone)
        for m in MODALITIES:
            expected = p.as_dict().get(m, (0.0, 0.0))
            assert torch.equal(out.reliability[m][0], torch.tensor(expected))
