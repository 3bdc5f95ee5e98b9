"""Named evaluation protocols and their points."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from robustmsa.data.batch import MODALITIES
from robustmsa.spectrum import PROTOCOLS, EvalPoint, apply_point, build_points


def test_point_counts():
    assert len(build_points(["clean"])) == 1
    assert len(build_points(["missing"])) == 11
    assert len(build_points(["noise"])) == 11
    assert len(build_points(["clean", "missing", "noise"])) == 23
    assert set(PROTOCOLS) >= {"clean", "missing", "noise"}


def test_keys_unique_and_stable():
    points = build_points(["clean", "missing", "noise"])
    keys = [p.key for p in points]
    assert len(set(keys)) == len(keys)
    assert keys[0] == "clean/all/0.00"
    assert "missing/all/0.30" in keys and "noise/all/1.00" in keys
    assert len(set(points)) == len(points)  # hashable


def test_levels_have_no_float_drift():
    levels = [p.level for p in build_points("missing")]
    assert levels == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    custom = build_points("noise", levels=[0.1 * 3, 0.125])
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


def test_eval_point_is_frozen_and_normalised():
    p = EvalPoint("missing", "text", 0.1 + 0.2, {"text": (0.0, 0.3)})
    assert p.level == 0.3 and p.key == "missing/text/0.30"
    assert p.point == (("text", (0.0, 0.3)),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.level = 0.5
    with pytest.raises(ValueError, match="smell"):
        EvalPoint("missing", "all", 0.3, {"smell": (0.0, 0.3)})


def test_unknown_protocol_names_it_and_lists_known():
    with pytest.raises(ValueError) as info:
        build_points(["clean", "bogus"])
    msg = str(info.value)
    assert "bogus" in msg and "missing" in msg and "noise" in msg and "clean" in msg


@pytest.mark.parametrize(
    "names,levels,needle",
    [(["clean", "clean"], None, "twice"), (["noise"], [0.1, 0.1], "repeat"), (["noise"], [2], "2")],
)
def test_bad_arguments(names, levels, needle):
    with pytest.raises(ValueError, match=needle):
        build_points(names, levels)


def test_points_drive_apply_point(tiny_valid):
    batch = tiny_valid.batch(list(range(6)))
    digest = tiny_valid.meta.digest
    for p in build_points(["clean", "missing"]):
        out = apply_point(batch, p.point, seed=1, stream_key="eval", digest=digest)
        if p.level == 1.0:
            assert not any(out.present[m].any() for m in MODALITIES)
        for m in MODALITIES:
            assert torch.equal(out.reliability[m][0], torch.tensor(p.as_dict()[m]))
