"""`apply_point`: the noise/missing operators, their invariants and their determinism."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from robustmsa.data.batch import MODALITIES
from robustmsa.spectrum import apply_point
from robustmsa.spectrum.keys import derive_key

KW = {"seed": 1111, "stream_key": "test/all/0.50", "digest": "d1"}


def everywhere(lam, eta):
    return {m: (lam, eta) for m in MODALITIES}


def snapshot(batch):
    return {
        m: (batch.features[m].clone(), batch.masks[m].clone(), batch.present[m].clone())
        for m in batch.modalities
    }


def test_clean_point_is_identity(tiny_valid):
    batch = tiny_valid.batch(list(range(10)))
    out = apply_point(batch, everywhere(0.0, 0.0), **KW)
    assert out is not batch
    assert out.ids == batch.ids
    for m in MODALITIES:
        assert torch.equal(out.features[m], batch.features[m])
        assert torch.equal(out.masks[m], batch.masks[m])
        assert torch.equal(out.present[m], batch.present[m])
        assert out.reliability[m].dtype == torch.float32
        assert torch.equal(out.reliability[m], torch.zeros(10, 2))


def test_input_is_not_mutated(tiny_valid):
    batch = tiny_valid.batch(list(range(10)))
    before = snapshot(batch)
    apply_point(batch, everywhere(0.6, 0.5), **KW)
    apply_point(batch, everywhere(1.0, 1.0), **KW)
    for m, (x, mask, pres) in before.items():
        assert torch.equal(batch.features[m], x)
        assert torch.equal(batch.masks[m], mask)
        assert torch.equal(batch.present[m], pres)
    assert batch.reliability == {}


def test_unlisted_modalities_stay_clean_and_reliability_is_recorded(tiny_valid):
    batch = tiny_valid.batch([0, 1, 2])
    out = apply_point(batch, {"audio": (0.4, 0.2)}, **KW)
    for m in ("text", "vision"):
        assert torch.equal(out.features[m], batch.features[m])
        assert torch.equal(out.masks[m], batch.masks[m])
        assert torch.equal(out.reliability[m], torch.zeros(3, 2))
    expected = torch.tensor([[0.4, 0.2]] * 3, dtype=torch.float32)
    assert torch.equal(out.reliability["audio"], expected)
    assert not torch.equal(out.features["audio"], batch.features["audio"])


def test_clean_reference_is_carried_over(tiny_valid):
    clean = tiny_valid.batch([0, 1])
    batch = tiny_valid.batch([0, 1])
    batch.clean = clean
    assert apply_point(batch, everywhere(0.5, 0.5), **KW).clean is clean
    assert apply_point(clean, everywhere(0.5, 0.5), **KW).clean is None


def test_full_noise_ignores_the_input(make_batch):
    a, b = make_batch(seed=1), make_batch(seed=2)
    assert not torch.equal(a.features["text"], b.features["text"])
    out_a = apply_point(a, everywhere(1.0, 0.0), **KW)
    out_b = apply_point(b, everywhere(1.0, 0.0), **KW)
    for m in MODALITIES:
        assert torch.equal(out_a.features[m], out_b.features[m])
        assert out_a.present[m].all()


def test_full_noise_is_standard_normal(make_batch):
    out = apply_point(make_batch(), everywhere(1.0, 0.0), **KW)
    x = out.features["text"].double().flatten()  # 64 * 50 * 16 = 51200 i.i.d. N(0, 1) draws
    # Standard errors: mean 1/sqrt(n) ~ 0.0044, variance sqrt(2/n) ~ 0.0063; 0.03 is ~5-7 SE,
    # so a correct operator fails with probability < 1e-6 (and the draws are seeded anyway).
    assert abs(x.mean().item()) < 0.03
    assert abs(x.var().item() - 1.0) < 0.03


def test_noise_preserves_variance_of_standardised_input(make_batch):
    batch = make_batch(seed=3)
    lam = 0.5
    out = apply_point(batch, everywhere(lam, 0.0), **KW)
    x = batch.features["vision"].double().flatten()
    y = out.features["vision"].double().flatten()
    # y = sqrt(1 - λ²) x + λ ε with x, ε independent N(0, 1): y is exactly N(0, 1) and
    # corr(x, y) = sqrt(1 - λ²) ~ 0.866. With n = 51200 the sample variance has standard error
    # sqrt(2/n) ~ 0.0063 and the correlation ~ (1 - ρ²)/sqrt(n) ~ 0.0011: 0.03 and 0.01 are
    # both beyond 4.5 SE.
    assert abs(y.var().item() - 1.0) < 0.03
    rho = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
    assert abs(rho - math.sqrt(1 - lam**2)) < 0.01


def test_padding_stays_zero(tiny_valid):
    batch = tiny_valid.batch(list(range(len(tiny_valid))))
    assert not all(batch.masks[m].all() for m in MODALITIES)  # the split has padding
    for lam, eta in [(0.7, 0.0), (0.7, 0.3), (1.0, 0.5), (0.0, 0.9)]:
        out = apply_point(batch, everywhere(lam, eta), **KW)
        for m in MODALITIES:
            pad = ~out.masks[m]
            assert (out.features[m][pad] == 0).all()
            assert not (out.masks[m] & ~batch.masks[m]).any()  # frames only ever removed


def test_full_missing_makes_modality_absent(tiny_valid):
    batch = tiny_valid.batch(list(range(8)))
    out = apply_point(batch, {"text": (0.3, 1.0)}, **KW)
    assert not out.present["text"].any()
    assert not out.masks["text"].any()
    assert (out.features["text"] == 0).all()
    assert out.present["audio"].all()


def test_drop_rate_matches_eta(make_batch):
    batch = make_batch()
    eta = 0.3
    out = apply_point(batch, everywhere(0.0, eta), **KW)
    for m in MODALITIES:
        n = batch.masks[m].sum().item()  # 3200 frames
        rate = 1 - out.masks[m].sum().item() / n
        # Binomial(n, η)/n has standard error sqrt(η(1-η)/n) ~ 0.0081; 0.04 is ~5 SE.
        assert abs(rate - eta) < 0.04
        kept = out.masks[m]
        # Surviving frames are unchanged (η alone adds no noise); dropped frames are zero.
        assert torch.equal(out.features[m][kept], batch.features[m][kept])
        assert (out.features[m][batch.masks[m] & ~kept] == 0).all()


def test_sample_with_no_frame_left_becomes_absent(make_batch):
    batch = make_batch(b=200, t=4, lengths=[1] * 200)
    out = apply_point(batch, everywhere(0.0, 0.5), **KW)
    for m in MODALITIES:
        assert torch.equal(out.present[m], out.masks[m].any(1))
        assert 0 < out.present[m].sum().item() < 200


def test_naturally_absent_stays_absent(tiny_valid):
    batch = tiny_valid.batch([0, 1, 2, 3])
    batch.present["audio"][1] = False
    batch.masks["audio"][1] = False
    batch.features["audio"][1] = 0.0
    for lam, eta in [(0.0, 0.0), (0.8, 0.0), (0.0, 0.4), (0.5, 0.5), (1.0, 1.0)]:
        out = apply_point(batch, everywhere(lam, eta), **KW)
        assert not out.present["audio"][1]
        assert not out.masks["audio"][1].any()
        assert (out.features["audio"][1] == 0).all()


def rows_of(batch):
    """Per id and modality: (valid positions, their features, present); padding ignored."""
    out = {}
    for i, sid in enumerate(batch.ids):
        per = {}
        for m in batch.modalities:
            pos = batch.masks[m][i].nonzero().flatten()
            per[m] = (pos, batch.features[m][i][pos], bool(batch.present[m][i]))
        out[sid] = per
    return out


def assert_same_rows(a, b):
    assert a.keys() == b.keys()
    for sid in a:
        for m in MODALITIES:
            pos_a, x_a, p_a = a[sid][m]
            pos_b, x_b, p_b = b[sid][m]
            assert p_a == p_b, (sid, m)
            assert torch.equal(pos_a, pos_b), (sid, m)
            assert torch.equal(x_a, x_b), (sid, m)


@pytest.mark.parametrize("lam,eta", [(0.5, 0.4), (1.0, 0.0), (0.0, 0.7)])
def test_independent_of_batch_size_and_order(tiny_valid, lam, eta):
    point = everywhere(lam, eta)
    big = list(range(16))
    together = rows_of(apply_point(tiny_valid.batch(big), point, **KW))
    reversed_ = rows_of(apply_point(tiny_valid.batch(big[::-1]), point, **KW))
    alone = {}
    for i in big:
        alone.update(rows_of(apply_point(tiny_valid.batch([i]), point, **KW)))
    assert_same_rows(together, reversed_)
    assert_same_rows(together, alone)


@pytest.mark.parametrize(
    "change", [{"seed": 1112}, {"stream_key": "test/all/0.60"}, {"digest": "d2"}]
)
def test_seed_stream_key_and_digest_change_the_draws(tiny_valid, change):
    batch = tiny_valid.batch(list(range(8)))
    point = everywhere(0.5, 0.5)
    base = apply_point(batch, point, **KW)
    other = apply_point(batch, point, **{**KW, **change})
    again = apply_point(batch, point, **KW)
    for m in MODALITIES:
        assert torch.equal(base.features[m], again.features[m])
        assert torch.equal(base.masks[m], again.masks[m])
        assert not torch.equal(base.features[m], other.features[m])
        assert not torch.equal(base.masks[m], other.masks[m])


def test_modalities_draw_different_numbers(make_batch):
    out = apply_point(make_batch(), everywhere(1.0, 0.0), **KW)
    assert not torch.equal(out.features["text"], out.features["audio"])


def test_derive_key_is_stable_and_unambiguous():
    key = derive_key("d", "id", "pk", 1, "text", "noise")
    assert key == derive_key("d", "id", "pk", 1, "text", "noise")
    assert 0 <= key < 2**64
    # Concatenation ambiguity ("ab" + "c" vs "a" + "bc") must not collide.
    assert derive_key("ab", "c", "pk", 1, "text", "noise") != key
    assert derive_key("a", "bc", "pk", 1, "text", "noise") != derive_key(
        "ab", "c", "pk", 1, "text", "noise"
    )


@pytest.mark.parametrize(
    "point,needle",
    [
        ({"text": (1.5, 0.0)}, "1.5"),
        ({"text": (0.0, -0.1)}, "-0.1"),
        ({"text": (float("nan"), 0.0)}, "nan"),
        ({"smell": (0.1, 0.1)}, "smell"),
        ({"text": (0.1,)}, "text"),
        ({"text": ("0.1", 0.0)}, "0.1"),
    ],
)
def test_invalid_points_are_rejected(tiny_valid, point, needle):
    batch = tiny_valid.batch([0])
    with pytest.raises(ValueError) as info:
        apply_point(batch, point, **KW)
    assert needle in str(info.value)


def test_invalid_arguments_are_rejected(tiny_valid):
    batch = tiny_valid.batch([0])
    with pytest.raises(ValueError, match="seed"):
        apply_point(batch, {}, **{**KW, "seed": "1"})
    with pytest.raises(ValueError, match="digest"):
        apply_point(batch, {}, **{**KW, "digest": None})


def test_spectrum_imports_neither_ray_nor_mlflow():
    code = (
        "import sys, robustmsa.spectrum\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_result_on_cuda(tiny_valid):
    batch = tiny_valid.batch(list(range(8)))
    point = everywhere(0.5, 0.4)
    cpu = apply_point(batch, point, **KW)
    gpu = apply_point(batch.to("cuda"), point, **KW).to("cpu")
    for m in MODALITIES:
        assert torch.equal(cpu.masks[m], gpu.masks[m])
        assert torch.equal(cpu.present[m], gpu.present[m])
        torch.testing.assert_close(cpu.features[m], gpu.features[m])
