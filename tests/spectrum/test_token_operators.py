"""Token-id operators on text (docs/architecture.md §3): replacement noise, [UNK] missingness,
determinism,
and the token ids a `ParquetSplit` batch carries."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from robustmsa.data.batch import MODALITIES
from robustmsa.data.parquet import SplitArrays, open_dataset, write_dataset
from robustmsa.data.schema import DatasetMeta
from robustmsa.spectrum import BERT_UNCASED, TokenSpec, apply_point, corrupt_tokens, draw

KW = {"seed": 1111, "stream_key": "test/text/0.50", "digest": "d1"}
SPECIALS = torch.tensor(BERT_UNCASED.special_ids)
CLS, SEP, UNK, MASK = 101, 102, 100, 103


def with_tokens(batch, lengths, seed=0):
    """``batch`` with ``[CLS] body [SEP]`` token rows of ``lengths`` (>= 2), padded with 0.

    Bodies are non-special ids, except an existing ``[UNK]`` and ``[MASK]`` inside rows longer
    than 4 (special tokens in the middle must not change either).
    """
    g = torch.Generator().manual_seed(seed)
    length = max(lengths)
    tokens = torch.zeros((batch.size, length), dtype=torch.int64)
    mask = torch.zeros((batch.size, length), dtype=torch.bool)
    for i, n in enumerate(lengths):
        body = torch.randint(1000, 30000, (n - 2,), generator=g)
        if n > 4:
            body[1], body[2] = UNK, MASK
        tokens[i, :n] = torch.cat([torch.tensor([CLS]), body, torch.tensor([SEP])])
        mask[i, :n] = True
    return replace(batch, tokens=tokens, token_mask=mask)


@pytest.fixture
def big(make_batch):
    """400 samples of 52 tokens: 48 changeable (non-special) tokens each, 19200 in all."""
    return with_tokens(make_batch(b=400, t=4, d=2), [52] * 400)


@pytest.fixture
def varied(make_batch):
    """24 samples of 2..30 tokens, padded to 30."""
    lengths = [2 + (7 * i) % 29 for i in range(24)]
    return with_tokens(make_batch(b=24, t=6, d=3, seed=5), lengths, seed=3)


def text_only(lam, eta):
    return {"text": (lam, eta)}


def changeable(batch):
    return batch.token_mask & ~torch.isin(batch.tokens, SPECIALS)


def repad(batch, length):
    """``batch`` with its token rows cut or zero-padded to ``length`` positions."""
    assert length >= int(batch.token_mask.sum(1).max())
    tokens = torch.zeros((batch.size, length), dtype=torch.int64)
    mask = torch.zeros((batch.size, length), dtype=torch.bool)
    keep = min(length, batch.tokens.shape[1])
    tokens[:, :keep] = batch.tokens[:, :keep]
    mask[:, :keep] = batch.token_mask[:, :keep]
    return replace(batch, tokens=tokens, token_mask=mask)


def token_rows(batch):
    """Per id: the real tokens of the row (padding ignored) and whether text is present."""
    return {
        sid: (batch.tokens[i][batch.token_mask[i]], bool(batch.present["text"][i]))
        for i, sid in enumerate(batch.ids)
    }


@pytest.mark.parametrize("lam,eta", [(1.0, 0.0), (0.0, 0.9), (0.6, 0.6), (1.0, 0.999), (0.4, 1.0)])
def test_special_tokens_and_padding_never_change(varied, lam, eta):
    out = apply_point(varied, text_only(lam, eta), **KW)
    special = torch.isin(varied.tokens, SPECIALS)
    assert torch.equal(out.tokens[special], varied.tokens[special])  # includes [PAD] padding
    assert (out.tokens[~varied.token_mask] == 0).all()
    assert out.token_mask is varied.token_mask
    # Whatever changed is a changeable token, now non-special or [UNK].
    moved = out.tokens != varied.tokens
    assert not (moved & ~changeable(varied)).any()
    assert moved[changeable(varied)].any()
    new = out.tokens[moved]
    assert ((new == UNK) | ~torch.isin(new, SPECIALS)).all()
    assert ((new >= 0) & (new < BERT_UNCASED.vocab_size)).all()


def test_replacement_rate_matches_lambda(big):
    lam = 0.3
    out = apply_point(big, text_only(lam, 0.0), **KW)
    can = changeable(big)
    n = int(can.sum())  # 19200
    rate = (out.tokens != big.tokens)[can].float().mean().item()
    # A replaced token keeps its id with probability 1/30517, negligible. Binomial(n, λ)/n has
    # standard error sqrt(λ(1-λ)/n) ~ 0.0033; 0.02 is ~6 SE.
    assert abs(rate - lam) < 0.02
    assert n == 19200
    assert not (out.tokens == UNK)[can & (big.tokens != UNK)].any()  # λ alone adds no [UNK]


def test_replacements_are_uniform_over_the_non_special_vocabulary(big):
    out = apply_point(big, text_only(1.0, 0.0), **KW)
    can = changeable(big)
    new = out.tokens[can]
    # At λ = 1 every changeable token is replaced; it keeps its id only with prob. 1/30517 each
    # (expected 0.6 of 19200), so more than 20 unchanged would mean a broken operator.
    assert int((new == big.tokens[can]).sum()) < 20
    assert not torch.isin(new, SPECIALS).any()
    pool = torch.tensor([i for i in range(BERT_UNCASED.vocab_size) if i not in SPECIALS])
    # Deciles of the non-special pool: each should hold 10% of the replacements. The standard
    # error of a decile share is sqrt(0.09/19200) ~ 0.0022; 0.012 is ~5.5 SE.
    rank = torch.searchsorted(pool, new)
    assert torch.equal(pool[rank], new)  # every replacement is in the pool
    share = torch.bincount(rank * 10 // len(pool), minlength=10).float() / len(new)
    assert (share - 0.1).abs().max().item() < 0.012
    # The ids just above [PAD] (1..99) and just above [MASK] are reachable, the specials not.
    assert (new < UNK).any() and (new > MASK).any()


def test_unk_rate_matches_eta_and_keeps_other_tokens(big):
    eta = 0.4
    out = apply_point(big, text_only(0.0, eta), **KW)
    can = changeable(big)
    unk = (out.tokens == UNK) & can
    # Binomial standard error sqrt(η(1-η)/19200) ~ 0.0035; 0.02 is ~5.7 SE.
    assert abs(unk[can].float().mean().item() - eta) < 0.02
    kept = can & ~unk
    assert torch.equal(out.tokens[kept], big.tokens[kept])


def test_noise_comes_before_missingness(big):
    lam, eta = 0.5, 0.5
    out = apply_point(big, text_only(lam, eta), **KW)
    noisy = apply_point(big, text_only(lam, 0.0), **KW)
    can = changeable(big)
    unk = (out.tokens == UNK) & can
    # Every token is first noised exactly as at (λ, 0), then dropped to [UNK] at rate η.
    assert torch.equal(out.tokens[can & ~unk], noisy.tokens[can & ~unk])
    assert abs(unk[can].float().mean().item() - eta) < 0.02  # ~5.7 SE, as above
    survivors = can & ~unk
    replaced = (out.tokens != big.tokens)[survivors].float().mean().item()
    assert abs(replaced - lam) < 0.03  # ~9600 survivors: SE ~ 0.0051, ~6 SE


def test_levels_use_common_random_numbers(varied):
    levels = [0.1, 0.3, 0.5, 0.9]
    noisy = [apply_point(varied, text_only(lvl, 0.0), **KW).tokens for lvl in levels]
    for low, high in itertools.pairwise(noisy):
        moved_low, moved_high = low != varied.tokens, high != varied.tokens
        assert not (moved_low & ~moved_high).any()  # replaced at λ -> replaced at every λ' > λ
        assert torch.equal(low[moved_low], high[moved_low])  # by the same token
        assert (moved_high & ~moved_low).any()
    dropped = [apply_point(varied, text_only(0.0, lvl), **KW).tokens == UNK for lvl in levels]
    for low, high in itertools.pairwise(dropped):
        assert not (low & ~high).any()
        assert (high & ~low).any()


@pytest.mark.parametrize("lam,eta", [(0.5, 0.4), (1.0, 0.0), (0.0, 0.7)])
def test_independent_of_batch_size_order_and_padding(varied, lam, eta):
    point = text_only(lam, eta)
    together = token_rows(apply_point(varied, point, **KW))
    order = torch.randperm(varied.size, generator=torch.Generator().manual_seed(0))
    shuffled = token_rows(apply_point(varied.subset(order), point, **KW))
    alone, sevens = {}, {}
    for i in range(varied.size):
        one = repad(varied.subset(torch.tensor([i])), int(varied.token_mask[i].sum()))
        alone.update(token_rows(apply_point(one, point, **KW)))
    for start in range(0, varied.size, 7):
        seven = varied.subset(torch.arange(start, min(start + 7, varied.size)))
        sevens.update(token_rows(apply_point(seven, point, **KW)))
    longer = token_rows(apply_point(repad(varied, 45), point, **KW))
    clean = token_rows(varied)
    assert any(not torch.equal(together[sid][0], clean[sid][0]) for sid in clean)
    for other in (shuffled, alone, sevens, longer):
        assert other.keys() == together.keys()
        for sid, (t, p) in together.items():
            assert torch.equal(other[sid][0], t), sid
            assert other[sid][1] == p, sid


def test_full_missing_makes_text_absent_with_all_unk_tokens(varied):
    out = apply_point(varied, text_only(0.7, 1.0), **KW)
    assert not out.present["text"].any()
    can = changeable(varied)
    assert (out.tokens[can] == UNK).all()
    assert torch.equal(out.tokens[~can], varied.tokens[~can])
    assert out.token_mask is varied.token_mask
    assert out.present["audio"].all()


def test_naturally_absent_text_stays_absent_and_untouched(varied):
    present = dict(varied.present)
    present["text"] = present["text"].clone()
    present["text"][[1, 4]] = False
    batch = replace(varied, present=present)
    for lam, eta in [(0.0, 0.0), (1.0, 0.0), (0.0, 0.5), (0.5, 0.5), (1.0, 1.0)]:
        out = apply_point(batch, text_only(lam, eta), **KW)
        assert not out.present["text"][[1, 4]].any()
        assert torch.equal(out.tokens[[1, 4]], batch.tokens[[1, 4]])
    # The other rows are corrupted as in a batch where the two were present: draws per sample.
    out = apply_point(batch, text_only(0.5, 0.5), **KW)
    ref = apply_point(varied, text_only(0.5, 0.5), **KW)
    rest = [i for i in range(batch.size) if i not in (1, 4)]
    assert torch.equal(out.tokens[rest], ref.tokens[rest])


def test_clean_point_shares_token_tensors_and_input_is_untouched(varied):
    out = apply_point(varied, text_only(0.0, 0.0), **KW)
    assert out.tokens is varied.tokens
    assert out.token_mask is varied.token_mask
    before = varied.tokens.clone()
    apply_point(varied, text_only(0.8, 0.5), **KW)
    apply_point(varied, text_only(0.8, 1.0), **KW)
    assert torch.equal(varied.tokens, before)
    # Points without text leave the tokens alone.
    assert apply_point(varied, {"audio": (0.5, 0.5)}, **KW).tokens is varied.tokens


def test_seed_changes_token_draws(varied):
    base = apply_point(varied, text_only(0.5, 0.5), **KW).tokens
    again = apply_point(varied, text_only(0.5, 0.5), **KW).tokens
    other = apply_point(varied, text_only(0.5, 0.5), **{**KW, "seed": 1112}).tokens
    assert torch.equal(base, again)
    assert not torch.equal(base, other)


def test_token_draws_leave_feature_draws_unchanged(varied):
    plain = replace(varied, tokens=None, token_mask=None)
    point = {m: (0.5, 0.5) for m in MODALITIES}
    a, b = apply_point(varied, point, **KW), apply_point(plain, point, **KW)
    assert b.tokens is None and b.token_mask is None
    for m in MODALITIES:
        assert torch.equal(a.features[m], b.features[m])
        assert torch.equal(a.masks[m], b.masks[m])


def test_draws_hold_tokens_only_when_text_is_drawn(varied):
    with_text = draw(varied, ["text", "audio"], **KW)
    n = int(varied.token_mask.sum())
    assert with_text.token_noise.shape == (n,) and with_text.token_noise.dtype == torch.float32
    assert with_text.token_choice.shape == (n,) and with_text.token_choice.dtype == torch.float64
    assert with_text.token_missing.shape == (n,)
    assert draw(varied, ["audio"], **KW).token_noise is None
    # Reusing draws for a sweep gives the same result as drawing inside apply_point.
    for lam, eta in [(0.3, 0.2), (0.9, 0.6)]:
        shared = apply_point(varied, text_only(lam, eta), draws=with_text, **KW)
        fresh = apply_point(varied, text_only(lam, eta), **KW)
        assert torch.equal(shared.tokens, fresh.tokens)
    with pytest.raises(ValueError, match="text tokens"):
        apply_point(varied, text_only(0.3, 0.2), draws=replace(with_text, token_noise=None), **KW)


def test_token_outside_the_vocabulary_is_rejected(varied):
    tokens = varied.tokens.clone()
    tokens[0, 1] = 40000
    with pytest.raises(ValueError, match="40000"):
        apply_point(replace(varied, tokens=tokens), text_only(0.5, 0.0), **KW)
    small = TokenSpec(vocab_size=200, pad_id=0, unk_id=100, special_ids=(0, 100, 101, 102))
    with pytest.raises(ValueError, match="200"):
        apply_point(varied, text_only(0.5, 0.0), tokens=small, **KW)
    with pytest.raises(ValueError, match="TokenSpec"):
        apply_point(varied, text_only(0.5, 0.0), tokens="bert", **KW)


def test_custom_spec_draws_from_its_own_vocabulary(make_batch):
    spec = TokenSpec(vocab_size=12, pad_id=0, unk_id=1, special_ids=(0, 1, 2, 3, 7))
    b = 300
    tokens = torch.cat([torch.full((b, 1), 2), torch.full((b, 10), 5), torch.full((b, 1), 3)], 1)
    batch = replace(
        make_batch(b=b, t=2, d=2), tokens=tokens, token_mask=torch.ones_like(tokens, dtype=bool)
    )
    out = apply_point(batch, text_only(1.0, 0.0), tokens=spec, **KW)
    body = out.tokens[:, 1:-1]
    allowed = [i for i in range(spec.vocab_size) if i not in spec.special_ids]
    assert set(body.unique().tolist()) == set(allowed)  # 3000 draws over 7 ids: all seen
    assert torch.equal(out.tokens[:, [0, -1]], tokens[:, [0, -1]])
    dropped = apply_point(batch, text_only(0.0, 1.0), tokens=spec, **KW)
    assert (dropped.tokens[:, 1:-1] == spec.unk_id).all()


def test_replacement_index_maps_onto_the_non_special_ids():
    spec = TokenSpec(vocab_size=10, pad_id=0, unk_id=4, special_ids=(9, 0, 3, 4))
    expected = [i for i in range(10) if i not in spec.special_ids]
    assert spec.num_replacements == len(expected)
    got = spec.replacement(torch.arange(spec.num_replacements))
    assert got.tolist() == expected
    bert = BERT_UNCASED.replacement(torch.arange(BERT_UNCASED.num_replacements))
    assert bert.tolist() == [i for i in range(30522) if i not in BERT_UNCASED.special_ids]


def test_corrupt_tokens_with_per_sample_rates_and_own_uniforms():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1000, 2000, (3, 6), generator=g)
    tokens[:, 0] = CLS
    valid = torch.ones((3, 6), dtype=torch.bool)
    valid[2, 4:] = False
    noise_u, missing_u = torch.rand((3, 6), generator=g), torch.rand((3, 6), generator=g)
    choice_u = torch.rand((3, 6), generator=g, dtype=torch.float64)
    lam, eta = torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0, 0.0, 0.0])
    out = corrupt_tokens(tokens, valid, lam, eta, noise_u, choice_u, missing_u)
    assert (out[0, 1:] == UNK).all()  # η = 1: every non-special token [UNK]
    assert (out[1:, 1:][valid[1:, 1:]] != tokens[1:, 1:][valid[1:, 1:]]).all()  # λ = 1
    assert torch.equal(out[:, 0], tokens[:, 0])  # [CLS]
    assert torch.equal(out[2, 4:], tokens[2, 4:])  # not valid: untouched
    with pytest.raises(ValueError, match="missing_u"):
        corrupt_tokens(tokens, valid, lam, eta, noise_u, choice_u, missing_u[:, :5])
    with pytest.raises(ValueError, match="eta"):
        corrupt_tokens(tokens, valid, lam, torch.tensor([1.0, 0.0]), noise_u, choice_u, missing_u)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"vocab_size": 1}, "vocab_size"),
        ({"vocab_size": 30522.0}, "vocab_size"),
        ({"pad_id": 30522}, "pad_id"),
        ({"unk_id": -1}, "unk_id"),
        ({"unk_id": True}, "unk_id"),
        ({"special_ids": (0, 101, 102)}, "unk_id 100"),
        ({"special_ids": (100, 101)}, "pad_id 0"),
        ({"special_ids": (0, 100, 100)}, "duplicates"),
        ({"special_ids": (0, 100, 40000)}, "special_ids"),
        ({"special_ids": "0,100"}, "special_ids"),
        ({"vocab_size": 2, "special_ids": (0, 1), "unk_id": 1}, "whole vocabulary"),
    ],
)
def test_token_spec_validation(kwargs, needle):
    base = {"vocab_size": 30522, "pad_id": 0, "unk_id": 100, "special_ids": (0, 100, 101)}
    with pytest.raises(ValueError, match=needle):
        TokenSpec(**{**base, **kwargs})


def test_bert_uncased_spec():
    assert BERT_UNCASED.vocab_size == 30522
    assert (BERT_UNCASED.pad_id, BERT_UNCASED.unk_id) == (0, 100)
    assert set(BERT_UNCASED.special_ids) == {0, 100, 101, 102, 103}
    assert BERT_UNCASED.num_replacements == 30517


# --- token ids in batches ---------------------------------------------------------------------


def test_batch_requires_tokens_and_mask_together(varied):
    with pytest.raises(ValueError, match="together"):
        replace(varied, token_mask=None)
    with pytest.raises(ValueError, match="token_mask"):
        replace(varied, token_mask=varied.token_mask[:, :3])


def test_subset_and_to_carry_tokens(varied):
    index = torch.tensor([5, 0, 3])
    sub = varied.subset(index)
    assert torch.equal(sub.tokens, varied.tokens[index])
    assert torch.equal(sub.token_mask, varied.token_mask[index])
    moved = varied.to("cpu")
    assert torch.equal(moved.tokens, varied.tokens)
    assert torch.equal(moved.token_mask, varied.token_mask)
    plain = replace(varied, tokens=None, token_mask=None)
    assert plain.subset(index).tokens is None and plain.to("cpu").token_mask is None


@pytest.fixture(scope="module")
def token_dataset(tmp_path_factory):
    """Three splits whose text_ids have 0..5 tokens (the 0-length rows have no text)."""
    texts = {
        "train": [[101, 7, 102], [101, 8, 9, 10, 102]],
        "valid": [[101, 11, 12, 102], [], [101, 13, 102], [101, 14, 15, 16, 17, 102]],
        "test": [[101, 102], [101, 20, 102]],
    }
    splits = {}
    for name, rows in texts.items():
        n = len(rows)
        lengths = [len(r) for r in rows]
        frames = {m: [np.ones((2, 3), np.float32)] * n for m in MODALITIES}
        frames["text"] = [np.ones((t, 3), np.float32) * (i + 1) for i, t in enumerate(lengths)]
        splits[name] = SplitArrays(
            ids=[f"{name}-{i}" for i in range(n)],
            labels=np.zeros(n, np.float32),
            frames=frames,
            present={
                m: np.array([t > 0 for t in lengths]) if m == "text" else np.ones(n, bool)
                for m in MODALITIES
            },
            text_ids=[np.array(r, dtype=np.int64) for r in rows],
        )
    meta = DatasetMeta("tok", {m: 3 for m in MODALITIES}, (-3.0, 3.0), "test")
    root = write_dataset(tmp_path_factory.mktemp("tok") / "tok", splits, meta)
    return open_dataset(root), texts


def test_parquet_batch_carries_padded_token_ids(token_dataset):
    ds, texts = token_dataset
    valid = ds["valid"]
    for idx in ([0, 1, 2, 3], [3, 0], [2], [1]):
        b = valid.batch(idx)
        rows = [texts["valid"][i] for i in idx]
        length = max(max(len(r) for r in rows), 1)
        assert b.tokens.dtype == torch.int64 and b.token_mask.dtype == torch.bool
        assert b.tokens.shape == (len(idx), length) == b.token_mask.shape
        for i, r in enumerate(rows):
            assert b.tokens[i, : len(r)].tolist() == r
            assert b.token_mask[i].tolist() == [k < len(r) for k in range(length)]
            assert (b.tokens[i, len(r) :] == 0).all()  # padded with the pad id 0
    assert valid.batch([1]).present["text"].tolist() == [False]
    # Batches of every split, and corruption of them, work end to end.
    for split in ds.values():
        b = split.batch(list(range(len(split))))
        out = apply_point(b, text_only(0.5, 0.5), seed=1, stream_key="k", digest=split.meta.digest)
        assert out.token_mask is b.token_mask


def test_dataset_without_text_ids_has_no_tokens(tiny_valid):
    b = tiny_valid.batch([0, 1, 2])
    assert b.tokens is None and b.token_mask is None
    out = apply_point(b, text_only(0.5, 0.5), **KW)
    assert out.tokens is None and out.token_mask is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_tokens_on_cuda(varied):
    point = {m: (0.5, 0.4) for m in MODALITIES}
    draws = draw(varied, MODALITIES, **KW)
    cpu = apply_point(varied, point, **KW)
    gpu = apply_point(varied.to("cuda"), point, **KW).to("cpu")
    assert torch.equal(cpu.tokens, gpu.tokens)
    assert torch.equal(cpu.present["text"], gpu.present["text"])
    # Draws made on the CPU serve a batch on the device.
    shared = apply_point(varied.to("cuda"), point, draws=draws, **KW).to("cpu")
    assert torch.equal(cpu.tokens, shared.tokens)
