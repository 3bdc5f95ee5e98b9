"""`TrainingSampler`: random per-sample corruption for training."""

from __future__ import annotations

import pytest
import torch
from robustmsa.data.batch import MODALITIES
from robustmsa.spectrum import TrainingSampler


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
