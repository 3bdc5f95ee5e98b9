"""The training-time samplers: `TrainingSampler` (continuous), rates, patterns and mixtures."""

from __future__ import annotations

import typing

import pytest
import torch
from robustmsa.config import SpectrumConfig
from robustmsa.data.batch import MODALITIES
from robustmsa.spectrum import TrainingSampler
from robustmsa.spectrum.sampler import (
    RATES_AXES,
    SAMPLERS,
    FixedSampler,
    MixtureSampler,
    PatternSampler,
    RatesSampler,
    build_sampler,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_no_corruption_no_drop_is_identity_and_sets_clean(tiny_valid):
    batch = tiny_valid.batch(list(range(12)))
    out = TrainingSampler(0.0, 0.0)(batch, gen())
    assert out is not batch and out.ids == batch.ids
    for m in MODALITIES:
        assert torch.equal(out.features[m], batch.features[m])
        assert torch.equal(out.masks[m], batch.masks[m])
        assert torch.equal(out.present[m], batch.present[m])
        assert out.reliability[m].dtype == torch.float32
        assert torch.equal(out.reliability[m], torch.zeros(12, 2))
        assert out.clean.features[m] is batch.features[m]
        assert out.clean.masks[m] is batch.masks[m]
    assert out.clean.clean is None


def test_corruption_changes_features_and_keeps_invariants(tiny_valid):
    batch = tiny_valid.batch(list(range(len(tiny_valid))))
    before = {m: batch.features[m].clone() for m in MODALITIES}
    out = TrainingSampler(1.0, 0.0)(batch, gen(1))
    for m in MODALITIES:
        assert torch.equal(batch.features[m], before[m])  # input untouched
        rel = out.reliability[m]
        assert rel.shape == (len(tiny_valid), 2)
        assert ((rel >= 0) & (rel <= 1)).all() and rel.unique().numel() > 10
        assert (out.features[m][~out.masks[m]] == 0).all()
        assert not (out.masks[m] & ~batch.masks[m]).any()
        assert not (out.masks[m] & ~out.present[m][:, None]).any()
        assert not torch.equal(out.features[m], batch.features[m])
        assert torch.equal(out.clean.features[m], batch.features[m])


def test_corruption_probability_controls_clean_fraction(make_batch):
    out = TrainingSampler(0.25, 0.0)(make_batch(b=2000, t=2, d=2), gen(2))
    corrupted = (out.reliability["text"] != 0).any(1).float().mean().item()
    # Binomial(2000, 0.25)/2000 has standard error ~ 0.0097; 0.05 is ~5 SE.
    assert abs(corrupted - 0.25) < 0.05


def test_always_drop_keeps_exactly_one_clean_modality(tiny_valid):
    batch = tiny_valid.batch(list(range(len(tiny_valid))))
    out = TrainingSampler(1.0, 1.0)(batch, gen(3))
    count = torch.stack([out.present[m] for m in MODALITIES], 1).sum(1)
    assert (count == 1).all()
    chosen = set()
    for m in MODALITIES:
        back = out.present[m]
        chosen |= {m} if back.any() else set()
        assert torch.equal(out.features[m][back], batch.features[m][back])
        assert torch.equal(out.masks[m][back], batch.masks[m][back])
        assert torch.equal(out.reliability[m][back], torch.zeros(int(back.sum()), 2))
        assert (out.reliability[m][~back][:, 1] == 1).all()
        assert (out.features[m][~back] == 0).all()
    assert chosen == set(MODALITIES)  # the restored modality is chosen at random


def test_at_least_one_modality_survives(make_batch):
    batch = make_batch(b=500, t=3, d=2)
    # Sample 0 has only audio naturally; sample 1 has nothing and must stay empty.
    for m in ("text", "vision"):
        batch.present[m][0] = False
        batch.masks[m][0] = False
        batch.features[m][0] = 0.0
    for m in MODALITIES:
        batch.present[m][1] = False
        batch.masks[m][1] = False
        batch.features[m][1] = 0.0
    for seed in range(5):
        out = TrainingSampler(1.0, 0.8)(batch, gen(seed))
        count = torch.stack([out.present[m] for m in MODALITIES], 1).sum(1)
        assert (count[2:] >= 1).all()
        assert count[1] == 0
        assert out.present["audio"][0] and not out.present["text"][0]
        assert not out.present["vision"][0]


def test_same_generator_state_same_result(tiny_valid):
    batch = tiny_valid.batch(list(range(10)))
    sampler = TrainingSampler(0.5, 0.3)
    a, b, c = sampler(batch, gen(7)), sampler(batch, gen(7)), sampler(batch, gen(8))
    for m in MODALITIES:
        assert torch.equal(a.features[m], b.features[m])
        assert torch.equal(a.reliability[m], b.reliability[m])
    assert any(not torch.equal(a.features[m], c.features[m]) for m in MODALITIES)


@pytest.mark.parametrize("args,needle", [((1.5, 0.0), "p_corrupt"), ((0.0, -1), "p_drop")])
def test_probabilities_are_validated(args, needle):
    with pytest.raises(ValueError, match=needle):
        TrainingSampler(*args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_with_cpu_or_cuda_generator(tiny_valid):
    batch = tiny_valid.batch(list(range(8))).to("cuda")
    for g in (gen(0), torch.Generator(device="cuda").manual_seed(0)):
        out = TrainingSampler(1.0, 0.5)(batch, g)
        assert out.features["text"].device.type == "cuda"
        count = torch.stack([out.present[m] for m in MODALITIES], 1).sum(1)
        assert (count >= 1).all()


# ---------------------------------------------------------------------------------------------
# Selectable samplers: continuous, rates, patterns, mixture (built from `SpectrumConfig`)


def _original_continuous(p_corrupt, p_drop, batch, generator):
    """A frozen copy of `TrainingSampler.__call__` before the sampler had components.

    The oracle for "``continuous`` is unchanged": same generator state, same batch, bit for bit.
    """
    b, mods = batch.size, batch.modalities
    gdev = generator.device

    def uniform(*shape):
        return torch.rand(shape, generator=generator, device=gdev)

    features, masks, present, reliability = {}, {}, {}, {}
    for m in mods:
        x, mask, pres = batch.features[m], batch.masks[m], batch.present[m]
        dev = x.device
        corrupt = (uniform(b) < p_corrupt).to(dev)
        zero = torch.zeros(b, device=dev)
        lam = torch.where(corrupt, uniform(b).to(dev), zero)
        eta = torch.where(corrupt, uniform(b).to(dev), zero)
        whole = (uniform(b) < p_drop).to(dev)
        valid = mask & pres[:, None]
        if p_corrupt > 0.0:
            eps = torch.randn(x.shape, generator=generator, device=gdev).to(dev)
            noisy = torch.sqrt(1.0 - lam * lam)[:, None, None] * x + lam[:, None, None] * eps
            x = torch.where(valid[..., None], noisy, x)
            mask = mask & ~(uniform(*mask.shape).to(dev) < eta[:, None])
        new_pres = pres & ~whole & (mask.any(dim=1) | (eta == 0))
        mask = mask & new_pres[:, None]
        features[m] = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=dev))
        masks[m] = mask
        present[m] = new_pres
        reliability[m] = torch.stack([lam, torch.where(whole, torch.ones_like(eta), eta)], 1)
    natural = torch.stack([batch.present[m] for m in mods], 1)
    after = torch.stack([present[m] for m in mods], 1)
    need = natural.any(1) & ~after.any(1)
    scores = uniform(b, len(mods)).to(natural.device)
    choice = torch.where(natural, scores, torch.full_like(scores, -1.0)).argmax(1)
    for j, m in enumerate(mods):
        back = (need & (choice == j)).to(features[m].device)
        features[m] = torch.where(back[:, None, None], batch.features[m], features[m])
        masks[m] = torch.where(back[:, None], batch.masks[m], masks[m])
        present[m] = present[m] | back
        reliability[m] = torch.where(
            back[:, None], torch.zeros_like(reliability[m]), reliability[m]
        )
    return features, masks, present, reliability


def _with_natural_absences(batch):
    """Sample 0 has only audio, sample 1 nothing, sample 2 no text (in place; returns batch)."""
    for i, gone in ((0, ("text", "vision")), (1, MODALITIES), (2, ("text",))):
        for m in gone:
            batch.present[m][i] = False
            batch.masks[m][i] = False
            batch.features[m][i] = 0.0
    return batch


def _varied_batch(make_batch, b=300, t=6, d=3, seed=0):
    lengths = torch.randint(1, t + 1, (b,), generator=gen(seed + 100))
    return _with_natural_absences(make_batch(b=b, t=t, d=d, seed=seed, lengths=lengths))


def _rel(out):
    """``(B, M, 2)`` reliability over `MODALITIES`."""
    return torch.stack([out.reliability[m] for m in MODALITIES], 1)


SPECTRA = {
    "continuous": SpectrumConfig(sampler="continuous", p_corrupt=0.8, p_drop=0.4),
    "rates-missing": SpectrumConfig(sampler="rates", clean_fraction=0.3),
    "rates-noise": SpectrumConfig(sampler="rates", clean_fraction=0.3, rates_axis="noise"),
    "rates-both": SpectrumConfig(sampler="rates", clean_fraction=0.3, rates_axis="both"),
    "patterns": SpectrumConfig(sampler="patterns", p_pattern=0.9),
    "mixture": SpectrumConfig(
        sampler="mixture", mixture_weights={"continuous": 1.0, "rates": 1.0, "patterns": 1.0}
    ),
}


@pytest.mark.parametrize(
    ("p_corrupt", "p_drop", "seed"), [(1.0, 0.1, 0), (0.5, 0.6, 1), (0.0, 0.5, 2), (1.0, 1.0, 3)]
)
def test_continuous_is_unchanged_from_the_original_sampler(make_batch, p_corrupt, p_drop, seed):
    batch = _varied_batch(make_batch, seed=seed)
    features, masks, present, reliability = _original_continuous(
        p_corrupt, p_drop, batch, gen(seed)
    )
    config = SpectrumConfig(sampler="continuous", p_corrupt=p_corrupt, p_drop=p_drop)
    for out in (
        build_sampler(config)(batch, gen(seed)),
        TrainingSampler(p_corrupt, p_drop)(batch, gen(seed)),
    ):
        for m in MODALITIES:
            assert torch.equal(out.features[m], features[m])
            assert torch.equal(out.masks[m], masks[m])
            assert torch.equal(out.present[m], present[m])
            assert torch.equal(out.reliability[m], reliability[m])


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_every_sampler_keeps_the_invariants(make_batch, name):
    batch = _varied_batch(make_batch, b=400)
    before = {m: batch.features[m].clone() for m in MODALITIES}
    out = build_sampler(SPECTRA[name])(batch, gen(4))
    assert out.ids == batch.ids and out.clean.clean is None
    natural = torch.stack([batch.present[m] for m in MODALITIES], 1)  # (B, M)
    after = torch.stack([out.present[m] for m in MODALITIES], 1)
    for j, m in enumerate(MODALITIES):
        assert torch.equal(batch.features[m], before[m])  # input untouched
        assert out.clean.features[m] is batch.features[m]
        rel = out.reliability[m]
        assert rel.dtype == torch.float32 and rel.shape == (batch.size, 2)
        assert ((rel >= 0) & (rel <= 1)).all()
        assert not (out.masks[m] & ~batch.masks[m]).any()
        assert not (out.masks[m] & ~out.present[m][:, None]).any()
        assert (out.features[m][~out.masks[m]] == 0).all()
        # Frames without noise (λ = 0) are the input's; a present modality is not at η = 1.
        quiet = out.masks[m] & (rel[:, 0] == 0)[:, None]
        assert torch.equal(out.features[m][quiet], batch.features[m][quiet])
        assert (rel[out.present[m], 1] < 1).all()
        removed = natural[:, j] & ~after[:, j]
        assert (rel[removed, 1] > 0).all()
    assert not (after & ~natural).any()  # naturally absent stays absent
    assert (after.any(1) == natural.any(1)).all()  # a sample with a modality keeps one


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_every_sampler_is_reproducible_from_its_generator_only(tiny_valid, name):
    batch = tiny_valid.batch(list(range(len(tiny_valid))))
    sampler = build_sampler(SPECTRA[name])
    state = torch.get_rng_state()
    a, b, c = sampler(batch, gen(5)), sampler(batch, gen(5)), sampler(batch, gen(6))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never used
    for m in MODALITIES:
        assert torch.equal(a.features[m], b.features[m])
        assert torch.equal(a.masks[m], b.masks[m])
        assert torch.equal(a.reliability[m], b.reliability[m])
    assert any(not torch.equal(a.reliability[m], c.reliability[m]) for m in MODALITIES)


def _ks_uniform(values):
    """Kolmogorov-Smirnov distance between the sample ``values`` and ``U(0, 1)``."""
    v = values.double().sort().values
    n = v.numel()
    hi = torch.arange(1, n + 1, dtype=torch.float64) / n - v
    lo = v - torch.arange(0, n, dtype=torch.float64) / n
    return max(hi.max().item(), lo.max().item())


def test_rates_keep_a_clean_fraction_and_draw_uniform_missing_rates(make_batch):
    b = 4000
    out = build_sampler(SpectrumConfig(sampler="rates", clean_fraction=0.3))(
        make_batch(b=b, t=40, d=2), gen(9)
    )
    rel = _rel(out)  # (B, M, 2)
    clean = (rel == 0).all(2).all(1)
    # Binomial(4000, 0.3)/4000 has standard error ~ 0.0072; 0.036 is 5 SE.
    assert abs(clean.float().mean().item() - 0.3) < 0.036
    assert (rel[..., 0] == 0).all()  # missing axis: no noise
    # Rates of the corrupted samples (a modality restored clean has η = 0: left out).
    eta = rel[~clean][..., 1]
    eta = eta[eta > 0]
    assert eta.numel() > 8000
    # KS critical value at α = 0.001 is 1.95 / sqrt(n) ~ 0.021 here.
    assert _ks_uniform(eta) < 1.95 / eta.numel() ** 0.5
    # The recorded η is the applied one: dropped-frame fractions average to it.
    dropped = torch.stack([(~out.masks[m]).float().mean(1) for m in MODALITIES], 1)  # (B, M)
    gap = (dropped - rel[..., 1])[~clean]
    # Each gap has variance η(1 - η)/40 <= 1/160; over ~8400 gaps the mean's SE is < 0.001.
    assert abs(gap.mean().item()) < 0.005


@pytest.mark.parametrize("axis", ["noise", "both"])
def test_rates_on_the_noise_axis_or_both(make_batch, axis):
    b = 3000
    config = SpectrumConfig(sampler="rates", clean_fraction=0.0, rates_axis=axis)
    batch = make_batch(b=b, t=4, d=2)
    out = build_sampler(config)(batch, gen(10))
    rel = _rel(out).reshape(-1, 2)  # (B * M, 2)
    lam, eta = rel[:, 0], rel[:, 1]
    assert _ks_uniform(lam) < 1.95 / lam.numel() ** 0.5
    if axis == "noise":
        assert (eta == 0).all()
        for m in MODALITIES:
            assert torch.equal(out.masks[m], batch.masks[m])
            assert not torch.equal(out.features[m], batch.features[m])
    else:
        keep = eta > 0  # modalities restored clean carry (0, 0)
        assert _ks_uniform(eta[keep]) < 1.95 / int(keep.sum()) ** 0.5
        # Independent draws: correlation within ~5 SE (1/sqrt(n)) of 0.
        corr = torch.corrcoef(torch.stack([lam[keep], eta[keep]]))[0, 1].item()
        assert abs(corr) < 5 / int(keep.sum()) ** 0.5


def test_patterns_draw_the_incomplete_patterns_uniformly(make_batch):
    b = 6000
    batch = make_batch(b=b, t=3, d=2)
    out = build_sampler(SpectrumConfig(sampler="patterns", p_pattern=0.7))(batch, gen(11))
    rel = _rel(out)
    after = torch.stack([out.present[m] for m in MODALITIES], 1)  # (B, M)
    assert (rel[..., 0] == 0).all()
    assert torch.equal(rel[..., 1] == 1, ~after)  # removed: η = 1; kept: clean
    assert ((rel[..., 1] == 0) | (rel[..., 1] == 1)).all()
    for m in MODALITIES:  # kept modalities are the input, untouched
        kept = out.present[m]
        assert torch.equal(out.features[m][kept], batch.features[m][kept])
        assert torch.equal(out.masks[m][kept], batch.masks[m][kept])
    patterned = ~after.all(1)
    # Binomial(6000, 0.7)/6000 has standard error ~ 0.0059; 0.03 is 5 SE.
    assert abs(patterned.float().mean().item() - 0.7) < 0.03
    codes = (after[patterned].long() * torch.tensor([1, 2, 4])).sum(1)
    counts = torch.bincount(codes, minlength=8).float() / codes.numel()
    assert counts[0] == 0 and counts[7] == 0  # never empty; complete only when unpatterned
    # Each of the 6 patterns has frequency 1/6 among ~4200 patterned samples: SE ~ 0.0058.
    assert (abs(counts[1:7] - 1 / 6) < 0.03).all()


def test_patterns_on_a_sample_missing_its_only_kept_modality_restore_another(make_batch):
    batch = _with_natural_absences(make_batch(b=500, t=2, d=2))
    out = PatternSampler(1.0)(batch, gen(12))
    count = torch.stack([out.present[m] for m in MODALITIES], 1).sum(1)
    assert count[1] == 0 and (count[[0, *range(2, 500)]] >= 1).all()
    assert out.present["audio"][0]  # its only natural modality, whatever the pattern


def _component_of(out):
    """Per sample: 0 continuous (some λ > 0), 1 rates (some 0 < η < 1), 2 patterns (η in {0, 1})."""
    rel = _rel(out)
    noisy = (rel[..., 0] > 0).any(1)
    partial = ((rel[..., 1] > 0) & (rel[..., 1] < 1)).any(1)
    pattern = ((rel[..., 1] == 1).any(1)) & ~noisy & ~partial
    assert (noisy | partial | pattern).all()  # every sample is recognisable
    return torch.where(noisy, 0, torch.where(partial, 1, 2))


@pytest.mark.parametrize(
    "weights", [{"continuous": 1.0, "rates": 2.0, "patterns": 1.0}, {"rates": 1.0, "patterns": 3.0}]
)
def test_mixture_draws_components_by_weight(make_batch, weights):
    b = 4000
    config = SpectrumConfig(
        sampler="mixture",
        p_corrupt=1.0,
        p_drop=0.0,
        clean_fraction=0.0,
        p_pattern=1.0,
        mixture_weights=weights,
    )
    out = build_sampler(config)(make_batch(b=b, t=20, d=2), gen(13))
    freq = torch.bincount(_component_of(out), minlength=3).float() / b
    total = sum(weights.values())
    for k, name in enumerate(("continuous", "rates", "patterns")):
        expected = weights.get(name, 0.0) / total
        # Binomial(4000, p)/4000 has standard error <= 0.0079; 0.04 is 5 SE.
        assert abs(freq[k].item() - expected) < 0.04, name
        if expected == 0:
            assert freq[k] == 0


def test_build_sampler_makes_the_named_sampler_with_its_parameters():
    s = build_sampler(SpectrumConfig(sampler="continuous", p_corrupt=0.25, p_drop=0.5))
    assert isinstance(s, TrainingSampler) and (s.p_corrupt, s.p_drop) == (0.25, 0.5)
    s = build_sampler(SpectrumConfig(sampler="rates", clean_fraction=0.2, rates_axis="both"))
    assert isinstance(s, RatesSampler) and (s.clean_fraction, s.axis) == (0.2, "both")
    s = build_sampler(SpectrumConfig(sampler="patterns", p_pattern=0.4))
    assert isinstance(s, PatternSampler) and s.p_pattern == 0.4
    weights = {"patterns": 2, "rates": 0}
    s = build_sampler(SpectrumConfig(sampler="mixture", p_pattern=0.4, mixture_weights=weights))
    assert isinstance(s, MixtureSampler) and s.weights == {"patterns": 2.0}
    assert isinstance(s.components["patterns"], PatternSampler)
    assert s.components["patterns"].p_pattern == 0.4


def test_sampler_names_match_the_config_choices():
    hints = typing.get_type_hints(SpectrumConfig)
    assert typing.get_args(hints["sampler"]) == SAMPLERS
    assert typing.get_args(hints["rates_axis"]) == RATES_AXES


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: RatesSampler(clean_fraction=1.5), "clean_fraction"),
        (lambda: RatesSampler(axis="sideways"), "rates_axis"),
        (lambda: PatternSampler(p_pattern=-0.1), "p_pattern"),
        (lambda: MixtureSampler({}, {"bogus": 1.0}), r"mixture_weights\.bogus: unknown"),
        (lambda: MixtureSampler({}, {"rates": -1.0}), r"mixture_weights\.rates: must be"),
        (lambda: MixtureSampler({}, {"rates": float("nan")}), r"mixture_weights\.rates"),
        (lambda: MixtureSampler({}, {"rates": True}), r"mixture_weights\.rates"),
        (lambda: MixtureSampler({}, {"rates": 0.0}), "must not all be 0"),
        (lambda: MixtureSampler({}, {"rates": 1.0}), r"mixture_weights\.rates: no such"),
    ],
)
def test_sampler_arguments_are_validated(make, needle):
    with pytest.raises(ValueError, match=needle):
        make()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_every_sampler_on_cuda_with_cpu_or_cuda_generator(tiny_valid, name):
    batch = tiny_valid.batch(list(range(len(tiny_valid))))
    sampler = build_sampler(SPECTRA[name])
    on_cpu = sampler(batch, gen(0))
    for g in (gen(0), torch.Generator(device="cuda").manual_seed(0)):
        out = sampler(batch.to("cuda"), g)
        assert out.features["text"].device.type == "cuda"
        assert out.reliability["text"].device.type == "cuda"
        count = torch.stack([out.present[m] for m in MODALITIES], 1).sum(1)
        assert (count >= 1).all()
    # A CPU generator draws the same numbers whatever the batch's device.
    out = sampler(batch.to("cuda"), gen(0))
    for m in MODALITIES:
        assert torch.equal(out.present[m].cpu(), on_cpu.present[m])
        assert torch.equal(out.reliability[m].cpu(), on_cpu.reliability[m])


def _with_tokens(batch, length=12, seed=0):
    """``batch`` with BERT-style token ids: [CLS] w ... w [SEP], then padding."""
    from dataclasses import replace

    g = torch.Generator().manual_seed(seed)
    b = batch.size
    lengths = torch.randint(4, length + 1, (b,), generator=g)
    pos = torch.arange(length)[None, :]
    mask = pos < lengths[:, None]
    words = torch.randint(1000, 30000, (b, length), generator=g)
    tokens = torch.where(mask, words, torch.zeros((), dtype=torch.long))
    tokens[:, 0] = 101
    tokens[torch.arange(b), lengths - 1] = 102
    return replace(batch, tokens=tokens, token_mask=mask)


def test_training_corrupts_tokens_with_the_text_rates(make_batch):
    batch = _with_tokens(make_batch(b=400, t=8, d=4), length=16)
    out = FixedSampler(noise=0.0, missing=0.5)(batch, torch.Generator().manual_seed(1))
    special = (batch.tokens == 0) | (batch.tokens == 101) | (batch.tokens == 102)
    assert torch.equal(out.tokens[special], batch.tokens[special])
    words = batch.token_mask & ~special
    unk = (out.tokens == 100) & words
    # Half the words become [UNK] (binomial: n ~ 4000, sd ~ 0.008; 5 sd tolerance).
    assert abs(unk.sum().item() / words.sum().item() - 0.5) < 0.04
    assert torch.equal(out.tokens[words & ~unk], batch.tokens[words & ~unk])
    assert torch.equal(out.clean.tokens, batch.tokens)


def test_tokens_follow_whole_drops_and_restores(make_batch):
    batch = _with_tokens(make_batch(b=300, t=8, d=4))
    out = TrainingSampler(p_corrupt=0.0, p_drop=1.0)(batch, torch.Generator().manual_seed(2))
    special = (batch.tokens == 0) | (batch.tokens == 101) | (batch.tokens == 102)
    words = batch.token_mask & ~special
    dropped = ~out.present["text"]
    assert dropped.any() and (~dropped).any()
    # Dropped text: every word is [UNK]; text restored as the one kept modality: untouched.
    assert (out.tokens[dropped][words[dropped]] == 100).all()
    assert torch.equal(out.tokens[~dropped], batch.tokens[~dropped])


def test_fixed_puts_every_sample_at_its_point(make_batch):
    batch = make_batch(b=200, t=40, d=4)
    out = FixedSampler(noise=0.3, missing=0.25)(batch, gen(3))
    for m in MODALITIES:
        rel = out.reliability[m]
        assert torch.all(rel[:, 0] == 0.3) and torch.all(rel[:, 1] == 0.25)
        kept = out.masks[m].sum() / batch.masks[m].sum()
        assert abs(kept.item() - 0.75) < 0.02  # n = 8000 frames, sd ~ 0.005
    clean = FixedSampler()(batch, gen(3))
    assert all(torch.equal(clean.features[m], batch.features[m]) for m in MODALITIES)
    with pytest.raises(ValueError, match="fixed_missing"):
        FixedSampler(missing=1.5)
