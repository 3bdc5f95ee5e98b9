"""Per-sample rates in `apply_point`: each sample's ``(λ_i, η_i)`` acts exactly as the float point
``(λ_i, η_i)`` would on that sample alone."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from robustmsa.data.batch import MODALITIES
from robustmsa.spectrum import Draws, apply_point, draw, needs_draws
from robustmsa.spectrum.operators import validate_point

KW = {"seed": 1111, "stream_key": "test/random/0", "digest": "d1"}


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


@pytest.fixture
def batch(tiny_valid):
    """16 real samples (variable lengths, so padding) with token ids added."""
    return with_tokens(tiny_valid.batch(list(range(16))))


def assert_same_batch(a, b):
    for m in MODALITIES:
        assert torch.equal(a.features[m], b.features[m]), m
        assert torch.equal(a.masks[m], b.masks[m]), m
        assert torch.equal(a.present[m], b.present[m]), m
        assert torch.equal(a.reliability[m], b.reliability[m]), m
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.token_mask, b.token_mask)


def row(batch, i):
    """Sample ``i`` of ``batch`` with padding ignored: per modality (positions, values,
    present), and the real tokens."""
    out = {}
    for m in MODALITIES:
        pos = batch.masks[m][i].nonzero().flatten()
        out[m] = (pos, batch.features[m][i][pos], bool(batch.present[m][i]))
    out["tokens"] = batch.tokens[i][batch.token_mask[i]]
    return out


@pytest.mark.parametrize(
    "lam,eta", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.3), (0.5, 0.4), (1.0, 0.7), (0.2, 1.0)]
)
def test_equal_per_sample_rates_give_the_float_result(batch, lam, eta):
    b = batch.size
    floats = apply_point(batch, {m: (lam, eta) for m in MODALITIES}, **KW)
    for dtype in (torch.float32, torch.float64):
        rates = {
            m: (torch.full((b,), lam, dtype=dtype), torch.full((b,), eta, dtype=dtype))
            for m in MODALITIES
        }
        assert_same_batch(apply_point(batch, rates, **KW), floats)
    # A float λ with a per-sample η (and the converse) is the same point too.
    mixed = {m: (lam, torch.full((b,), eta)) for m in MODALITIES}
    assert_same_batch(apply_point(batch, mixed, **KW), floats)


def test_all_clean_per_sample_rates_share_the_input_tensors(batch):
    zeros = torch.zeros(batch.size)
    out = apply_point(batch, {m: (zeros, zeros) for m in MODALITIES}, **KW)
    for m in MODALITIES:
        assert out.features[m] is batch.features[m]
        assert out.masks[m] is batch.masks[m]
    assert out.tokens is batch.tokens


def test_mixed_rates_equal_each_sample_evaluated_alone(tiny_valid, batch):
    g = torch.Generator().manual_seed(4)
    b = batch.size
    rates = {}
    for m in MODALITIES:
        lam, eta = torch.rand(b, generator=g), torch.rand(b, generator=g)
        # Exact edge cases on some rows: clean, pure noise, wholly dropped, drop only.
        lam[:4], eta[:4] = torch.tensor([0.0, 1.0, 0.6, 0.0]), torch.tensor([0.0, 0.0, 1.0, 0.5])
        rates[m] = (lam[torch.randperm(b, generator=g)], eta[torch.randperm(b, generator=g)])
    out = apply_point(batch, rates, **KW)
    corrupted_somewhere = False
    for i in range(b):
        # Alone: a batch of one read from the split (its own, shorter, padding), same tokens.
        n = int(batch.token_mask[i].sum())
        alone = replace(
            tiny_valid.batch([i]),
            tokens=batch.tokens[i : i + 1, :n],
            token_mask=batch.token_mask[i : i + 1, :n],
        )
        point = {m: (float(r[0][i]), float(r[1][i])) for m, r in rates.items()}
        single = apply_point(alone, point, **KW)
        got, want = row(out, i), row(single, 0)
        for m in MODALITIES:
            assert torch.equal(got[m][0], want[m][0]), (i, m)
            assert torch.equal(got[m][1], want[m][1]), (i, m)
            assert got[m][2] == want[m][2], (i, m)
            lam_i, eta_i = rates[m][0][i], rates[m][1][i]
            assert torch.equal(out.reliability[m][i], torch.stack([lam_i, eta_i]).float())
            if eta_i == 1.0:
                assert not got[m][2], (i, m)
            corrupted_somewhere |= not torch.equal(got[m][1], row(batch, i)[m][1])
        assert torch.equal(got["tokens"], want["tokens"]), i
    assert corrupted_somewhere


def test_clean_and_wholly_dropped_rows_need_no_draws(batch):
    b = batch.size
    eta = (torch.arange(b) % 2).double()  # rows 0, 2, ... clean; 1, 3, ... dropped
    lam = torch.full((b,), 0.8) * eta  # noise only where everything is dropped anyway
    point = {m: (lam, eta) for m in MODALITIES}
    assert not needs_draws(lam, eta)
    out = apply_point(batch, point, draws=Draws(), **KW)
    for m in MODALITIES:
        assert not out.present[m][1::2].any()
        assert not out.masks[m][1::2].any()
        assert torch.equal(out.features[m][0::2], batch.features[m][0::2])
        assert torch.equal(out.present[m][0::2], batch.present[m][0::2])
    assert torch.equal(out.tokens[0::2], batch.tokens[0::2])
    odd = batch.tokens[1::2]
    special = (odd == 101) | (odd == 102) | (odd == 0)
    assert (out.tokens[1::2][~special] == 100).all()


def test_needs_draws():
    assert not needs_draws(0.0, 0.0)
    assert not needs_draws(0.7, 1.0)
    assert needs_draws(0.1, 0.0)
    assert needs_draws(0.0, 0.1)
    assert needs_draws(torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.2]))
    assert not needs_draws(torch.tensor([0.5, 0.0]), torch.tensor([1.0, 0.0]))


def test_shared_draws_serve_per_sample_points(batch):
    draws = draw(batch, MODALITIES, **KW)
    g = torch.Generator().manual_seed(9)
    point = {
        m: (torch.rand(batch.size, generator=g), torch.rand(batch.size, generator=g))
        for m in MODALITIES
    }
    assert_same_batch(apply_point(batch, point, draws=draws, **KW), apply_point(batch, point, **KW))


def test_input_rates_are_not_modified(batch):
    lam, eta = torch.full((batch.size,), 0.5), torch.full((batch.size,), 1.0)
    eta[0] = 0.25
    before = (lam.clone(), eta.clone())
    apply_point(batch, {"audio": (lam, eta)}, **KW)
    assert torch.equal(lam, before[0]) and torch.equal(eta, before[1])


@pytest.mark.parametrize(
    "rate,needle",
    [
        (torch.full((17,), 0.5), "shape (16,)"),
        (torch.full((15,), 0.5), "shape (16,)"),
        (torch.full((16, 1), 0.5), "shape (16,)"),
        (torch.tensor(0.5), "shape (16,)"),
        (torch.ones(16, dtype=torch.int64), "int64"),
        (torch.ones(16, dtype=torch.bool), "bool"),
        (torch.cat([torch.full((15,), 0.5), torch.tensor([1.5])]), "1.5"),
        (torch.cat([torch.full((15,), 0.5), torch.tensor([-0.1])]), "sample 15"),
        (torch.cat([torch.tensor([float("nan")]), torch.full((15,), 0.5)]), "nan"),
    ],
)
def test_invalid_per_sample_rates_are_rejected(batch, rate, needle):
    for point in ({"vision": (rate, 0.0)}, {"vision": (0.0, rate)}):
        with pytest.raises(ValueError, match="vision") as info:
            apply_point(batch, point, **KW)
        assert needle in str(info.value)


def test_validate_point_accepts_per_sample_rates():
    lam = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float32)
    checked = validate_point({"audio": (lam, 0.25)}, MODALITIES)
    got_lam, got_eta = checked["audio"]
    assert got_lam.dtype == torch.float64 and torch.equal(got_lam, lam.double())
    assert got_eta == 0.25
    assert validate_point({"audio": (lam, lam)}, MODALITIES, size=3)["audio"][1].shape == (3,)
    with pytest.raises(ValueError, match="audio"):
        validate_point({"audio": (lam, lam)}, MODALITIES, size=4)
    with pytest.raises(ValueError, match="audio"):
        validate_point({"audio": (lam.numpy(), 0.0)}, MODALITIES)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_per_sample_rates_same_on_cuda(batch):
    g = torch.Generator().manual_seed(2)
    point = {
        m: (torch.rand(batch.size, generator=g), torch.rand(batch.size, generator=g))
        for m in MODALITIES
    }
    cpu = apply_point(batch, point, **KW)
    gpu = apply_point(batch.to("cuda"), point, **KW).to("cpu")
    assert torch.equal(cpu.tokens, gpu.tokens)
    for m in MODALITIES:
        assert torch.equal(cpu.masks[m], gpu.masks[m])
        assert torch.equal(cpu.present[m], gpu.present[m])
        assert torch.equal(cpu.reliability[m], gpu.reliability[m])
        torch.testing.assert_close(cpu.features[m], gpu.features[m])
