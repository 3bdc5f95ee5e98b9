"""`apply_point`: the noise/missing operators, their invariants and their determinism."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.spectrum import BERT_UNCASED, Draws, apply_point, draw
from robustmsa.spectrum.keys import (
    MISSING_STREAM,
    NOISE_STREAM,
    TOKEN_MISSING_STREAM,
    TOKEN_NOISE_STREAM,
    TOKEN_REPLACE_STREAM,
    derive_key,
    stream,
)

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


# --- Regression: `apply_point` against a per-sample reference, bit for bit -------------------
#
# The reference is the operator as documented, written one sample at a time from the random
# streams themselves: no padded draws, no batch-level arithmetic. `apply_point` (dense
# arithmetic on padded draws) must match it in every bit (float32 features compared as int32).


def reference_point(batch, point, *, seed, stream_key, digest, spec=BERT_UNCASED):
    """``(features, masks, present, reliability, tokens)`` of ``batch`` at ``point``."""
    b = batch.size
    features, masks, present = dict(batch.features), dict(batch.masks), dict(batch.present)
    reliability = {m: torch.zeros((b, 2)) for m in batch.modalities}
    tokens = batch.tokens
    for m, (lam, eta) in point.items():
        lams = [float(lam[i]) if isinstance(lam, torch.Tensor) else float(lam) for i in range(b)]
        etas = [float(eta[i]) if isinstance(eta, torch.Tensor) else float(eta) for i in range(b)]
        reliability[m] = torch.tensor(list(zip(lams, etas, strict=True)), dtype=torch.float32)
        if all(lam_i == 0.0 and eta_i == 0.0 for lam_i, eta_i in zip(lams, etas, strict=True)):
            continue  # clean: the input's tensors
        # NumPy float32 arithmetic: one ufunc per operation, each rounded, never fused.
        x, mask, pres = (t.numpy() for t in (batch.features[m], batch.masks[m], batch.present[m]))
        out_x, out_mask, out_pres = np.zeros_like(x), np.zeros_like(mask), pres.copy()
        for i, sid in enumerate(batch.ids):
            lam_i, eta_i = lams[i], etas[i]
            if not pres[i] or eta_i >= 1.0:
                out_pres[i] = False
                continue
            pos = np.flatnonzero(mask[i])
            rows = x[i, pos]
            if lam_i > 0.0:
                eps = stream(digest, sid, stream_key, seed, m, NOISE_STREAM).standard_normal(
                    (len(pos), x.shape[-1]), dtype=np.float32
                )
                keep = np.float32(math.sqrt(1.0 - lam_i * lam_i))
                rows = keep * rows + np.float32(lam_i) * eps
            kept = np.ones(len(pos), dtype=bool)
            if eta_i > 0.0:
                u = stream(digest, sid, stream_key, seed, m, MISSING_STREAM).random(
                    len(pos), dtype=np.float32
                )
                kept = ~(u < np.float32(eta_i))
            out_pres[i] = kept.any() or eta_i == 0.0
            if out_pres[i]:
                out_mask[i, pos[kept]] = True
                out_x[i, pos[kept]] = rows[kept]
        out_x, out_mask, out_pres = (torch.from_numpy(a) for a in (out_x, out_mask, out_pres))
        features[m], masks[m], present[m] = out_x, out_mask, out_pres
        if m == "text" and batch.tokens is not None:
            tokens = batch.tokens.clone()
            k = spec.num_replacements
            for i, sid in enumerate(batch.ids):
                lam_i, eta_i = lams[i], etas[i]
                if not batch.present["text"][i] or (lam_i == 0.0 and eta_i == 0.0):
                    continue
                pos = batch.token_mask[i].nonzero().flatten()
                row = batch.tokens[i, pos]
                changeable = ~spec.is_special(row)
                if eta_i >= 1.0:
                    tokens[i, pos] = torch.where(changeable, spec.unk_id, row)
                    continue

                noise_u, choice_u, missing_u = (
                    stream(digest, sid, stream_key, seed, "text", name).random(len(pos), dtype)
                    for name, dtype in (
                        (TOKEN_NOISE_STREAM, np.float32),
                        (TOKEN_REPLACE_STREAM, np.float64),
                        (TOKEN_MISSING_STREAM, np.float32),
                    )
                )
                index = torch.from_numpy(np.minimum(np.floor(choice_u * k), k - 1)).long()
                replaced = changeable & torch.from_numpy(noise_u < np.float32(lam_i))
                row = torch.where(replaced, spec.replacement(index), row)
                dropped = changeable & torch.from_numpy(missing_u < np.float32(eta_i))
                tokens[i, pos] = torch.where(dropped, spec.unk_id, row)
    return features, masks, present, reliability, tokens


def with_tokens(batch, seed=0):
    """``batch`` with ``[CLS] ids [SEP]`` rows of 3..12 tokens (ids 1000..29999), padded."""
    g = torch.Generator().manual_seed(seed)
    lengths = [3 + (5 * i) % 10 for i in range(batch.size)]
    tokens = torch.zeros((batch.size, max(lengths)), dtype=torch.int64)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(1000, 30000, (n,), generator=g)
        tokens[i, 0], tokens[i, n - 1] = 101, 102
    mask = torch.arange(tokens.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    return replace(batch, tokens=tokens, token_mask=mask)


def mosi_like(b=64, seed=0, holes=False):
    """MOSI-shaped random features (text ``(b, 50, 768)``, audio 5, vision 20), variable
    lengths (one full row); ``holes``: invalid frames inside the rows too."""
    g = torch.Generator().manual_seed(seed)
    dims = {"text": (50, 768), "audio": (40, 5), "vision": (45, 20)}
    features, masks, present = {}, {}, {}
    for m in MODALITIES:
        t, d = dims[m]
        lengths = torch.randint(1, t + 1, (b,), generator=g)
        lengths[0] = t
        mask = torch.arange(t)[None, :] < lengths[:, None]
        if holes:
            mask &= torch.rand((b, t), generator=g) < 0.8
        features[m] = torch.where(mask[..., None], torch.randn((b, t, d), generator=g), 0.0)
        masks[m], present[m] = mask, mask.any(1)
    ids = [f"m{i:05d}" for i in range(b)]
    return Batch(features=features, masks=masks, present=present, labels=torch.zeros(b), ids=ids)


@pytest.fixture(scope="module")
def regression_batches(tiny_valid):
    absent = tiny_valid.batch(list(range(16)))
    absent.present["audio"][1] = False  # naturally absent, mask cleared
    absent.masks["audio"][1] = False
    absent.features["audio"][1] = 0.0
    absent.present["vision"][2] = False  # naturally absent, mask left set: present wins
    return {
        "tiny": tiny_valid.batch(list(range(len(tiny_valid)))),
        "tiny_absent_tokens": with_tokens(absent),
        "mosi_like": mosi_like(),
        "mosi_like_holes_tokens": with_tokens(mosi_like(seed=1, holes=True)),
    }


def regression_points(b):
    g = torch.Generator().manual_seed(7)
    points = {
        name: everywhere(lam, eta)
        for name, (lam, eta) in {
            "noise": (0.5, 0.0),
            "full_noise": (1.0, 0.0),
            "missing": (0.0, 0.3),
            "joint": (0.4, 0.4),
            "joint_high": (0.7, 0.9),
            "eta_one": (0.3, 1.0),
        }.items()
    }
    points["text_only"] = {"text": (0.6, 0.2)}
    for dtype in (torch.float32, torch.float64):
        rates = {}
        for m in MODALITIES:
            lam, eta = torch.rand(b, generator=g).to(dtype), torch.rand(b, generator=g).to(dtype)
            # Exact edge cases: clean, pure noise, wholly dropped, drop only.
            lam[:4] = torch.tensor([0.0, 1.0, 0.6, 0.0], dtype=dtype)
            eta[:4] = torch.tensor([0.0, 0.0, 1.0, 0.5], dtype=dtype)
            rates[m] = (lam, eta)
        points[f"random_{str(dtype)[6:]}"] = rates
    points["float_lam_random_eta"] = {m: (0.3, torch.rand(b, generator=g)) for m in MODALITIES}
    return points


def assert_bits_equal(got, want, what):
    assert got.dtype == want.dtype and got.shape == want.shape, what
    if got.dtype == torch.float32:
        got, want = got.view(torch.int32), want.view(torch.int32)
    assert torch.equal(got, want), what


@pytest.mark.parametrize(
    "name", ["tiny", "tiny_absent_tokens", "mosi_like", "mosi_like_holes_tokens"]
)
def test_matches_the_per_sample_reference_bit_for_bit(regression_batches, name):
    batch = regression_batches[name]
    shared = draw(batch, MODALITIES, **KW)
    # Hand-made draws without the padded layout: apply_point builds it from eps and uniform.
    compact = Draws(
        eps=shared.eps,
        uniform=shared.uniform,
        token_noise=shared.token_noise,
        token_choice=shared.token_choice,
        token_missing=shared.token_missing,
    )
    for pname, point in regression_points(batch.size).items():
        want = reference_point(batch, point, **KW)
        # Every point with the draws of a sweep; a few also drawn inside and from hand-made
        # draws (the same numbers, so the same result).
        modes = [("shared", shared)]
        if pname in ("joint", "random_float64"):
            modes += [("own", None), ("compact", compact)]
        for mode, draws in modes:
            out = apply_point(batch, point, draws=draws, **KW)
            got = (out.features, out.masks, out.present, out.reliability)
            names = ("features", "masks", "present", "reliability")
            for field_name, g, w in zip(names, got, want[:4], strict=True):
                for m in MODALITIES:
                    assert_bits_equal(g[m], w[m], (pname, mode, field_name, m))
            if batch.tokens is None:
                assert out.tokens is None
            else:
                assert_bits_equal(out.tokens, want[4], (pname, mode, "tokens"))


def test_draws_keep_the_padded_layout(regression_batches):
    batch = regression_batches["mosi_like_holes_tokens"]
    draws = draw(batch, ["text", "vision"], **KW)
    assert sorted(draws.eps_padded) == sorted(draws.uniform_padded) == ["text", "vision"]
    for m in ("text", "vision"):
        valid = batch.masks[m] & batch.present[m][:, None]
        eps, uniform = draws.eps_padded[m], draws.uniform_padded[m]
        assert eps.shape == batch.features[m].shape and eps.dtype == torch.float32
        assert uniform.shape == valid.shape and uniform.dtype == torch.float32
        assert torch.equal(eps[valid], draws.eps[m])
        assert torch.equal(uniform[valid], draws.uniform[m])
        assert not eps[~valid].any() and not uniform[~valid].any()
    # Draws of a batch with the same valid frames but other padding are rejected.
    text, text_mask = batch.features["text"], batch.masks["text"]
    longer = replace(
        batch,
        features={**batch.features, "text": torch.cat([text, torch.zeros_like(text)], 1)},
        masks={**batch.masks, "text": torch.cat([text_mask, torch.zeros_like(text_mask)], 1)},
    )
    with pytest.raises(ValueError, match="padded draws"):
        apply_point(longer, {"text": (0.5, 0.5)}, draws=draws, **KW)
    with pytest.raises(ValueError, match="do not match"):
        apply_point(batch, {"audio": (0.5, 0.5)}, draws=draws, **KW)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_padded_draws_on_cuda(regression_batches):
    batch = regression_batches["mosi_like_holes_tokens"]
    draws = draw(batch, MODALITIES, **KW)
    moved = Draws(
        eps={m: t.cuda() for m, t in draws.eps.items()},
        uniform={m: t.cuda() for m, t in draws.uniform.items()},
        token_noise=draws.token_noise.cuda(),
        token_choice=draws.token_choice.cuda(),
        token_missing=draws.token_missing.cuda(),
        eps_padded={m: t.cuda() for m, t in draws.eps_padded.items()},
        uniform_padded={m: t.cuda() for m, t in draws.uniform_padded.items()},
    )
    gpu_batch = batch.to("cuda")
    for point in regression_points(batch.size).values():
        cpu = apply_point(batch, point, draws=draws, **KW)
        for d in (moved, draws, None):  # on the device, CPU draws moved per call, drawn
            gpu = apply_point(gpu_batch, point, draws=d, **KW).to("cpu")
            for m in MODALITIES:
                assert torch.equal(cpu.masks[m], gpu.masks[m])
                assert torch.equal(cpu.present[m], gpu.present[m])
                torch.testing.assert_close(cpu.features[m], gpu.features[m])
            assert torch.equal(cpu.tokens, gpu.tokens)
