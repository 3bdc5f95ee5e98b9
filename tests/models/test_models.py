"""Contract, robustness-to-absence, switch and learning tests for every registered model."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.data.parquet import open_dataset
from robustmsa.data.synthetic import generate
from robustmsa.models import MODELS, ModelOutput, MSAModel
from robustmsa.models.late_fusion import LateFusionConfig
from robustmsa.models.qa_moe import QAMoEConfig

DIMS = {"text": 16, "audio": 5, "vision": 7}
MODEL_NAMES = sorted(MODELS)
# Every subset of absent modalities, from none to all three.
ABSENT_SUBSETS = [
    frozenset(c) for n in range(len(MODALITIES) + 1) for c in itertools.combinations(MODALITIES, n)
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: a second intra-op thread only adds synchronisation, and on a
    busy 2-core machine it made the learning test 10-20x slower (spin-waiting on a thread
    that shares its core). Restored afterwards for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return open_dataset(generate("tiny", tmp_path_factory.mktemp("tiny") / "data"))


@pytest.fixture(scope="module")
def batch(dataset) -> Batch:
    return dataset["train"].batch(list(range(8)))


def build(name: str, seed: int = 0, **overrides) -> MSAModel:
    spec = MODELS[name]
    torch.manual_seed(seed)
    return spec.build(spec.config_cls(**overrides), DIMS)


def drop(batch: Batch, absent: frozenset[str]) -> Batch:
    """``batch`` with the modalities in ``absent`` made absent as the data layer does it."""
    features, masks, present = dict(batch.features), dict(batch.masks), dict(batch.present)
    for m in absent:
        features[m] = torch.zeros_like(features[m])
        masks[m] = torch.zeros_like(masks[m])
        present[m] = torch.zeros_like(present[m])
    return replace(batch, features=features, masks=masks, present=present)


def corrupt(batch: Batch, seed: int = 1) -> Batch:
    """Noisy features on valid frames, with the uncorrupted batch as ``clean``."""
    gen = torch.Generator().manual_seed(seed)
    features = {
        m: x + torch.randn(x.shape, generator=gen) * batch.masks[m].unsqueeze(-1)
        for m, x in batch.features.items()
    }
    return replace(batch, features=features, clean=batch)


def training_loss(model: MSAModel, out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
    """The training loop's objective: L1 task loss plus the weighted auxiliary losses."""
    weights = model.aux_loss_weights()
    loss = F.l1_loss(out.prediction, labels)
    for name, value in out.aux_losses.items():
        loss = loss + weights[name] * value
    return loss


def assert_finite(out: ModelOutput) -> None:
    assert torch.isfinite(out.prediction).all()
    for name, value in {**out.aux_losses, **out.extras}.items():
        assert torch.isfinite(value).all(), name
    for value in out.aux_losses.values():
        assert value.dim() == 0


# --- contract and absence -------------------------------------------------------------------


def test_both_models_registered():
    assert {"late_fusion", "qa_moe"} <= set(MODELS)
    assert MODELS["late_fusion"].config_cls is LateFusionConfig
    assert MODELS["qa_moe"].config_cls is QAMoEConfig


@pytest.mark.parametrize("absent", ABSENT_SUBSETS, ids=lambda s: "-".join(sorted(s)) or "none")
@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_every_absence_pattern(batch, name, batch_size, absent):
    model = build(name)
    full = batch.subset(torch.arange(batch_size))
    data = replace(drop(corrupt(full), absent), clean=full)
    model.train()
    out = model(data)
    assert out.prediction.shape == (batch_size,)
    assert out.prediction.dtype == torch.float32
    assert_finite(out)
    assert set(out.aux_losses) <= set(model.aux_loss_weights())
    training_loss(model, out, data.labels).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        assert_finite(model(data))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_all_absent_predicts_one_constant(batch, name):
    """With nothing observed the prediction cannot depend on the sample."""
    model = build(name).eval()
    with torch.no_grad():
        prediction = model(drop(batch, frozenset(MODALITIES))).prediction
    assert torch.allclose(prediction, prediction[0].expand_as(prediction))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_absent_modality_content_is_ignored(batch, name):
    """Garbage features left on an absent modality (present False) change nothing."""
    model = build(name).eval()
    absent = drop(batch, frozenset({"audio"}))
    garbage = replace(
        absent,
        features={**absent.features, "audio": torch.randn_like(batch.features["audio"]) * 9},
        masks={**absent.masks, "audio": batch.masks["audio"]},
    )
    with torch.no_grad():
        assert torch.equal(model(absent).prediction, model(garbage).prediction)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_output(batch, name):
    data = corrupt(batch)
    outs = []
    for _ in range(2):
        model = build(name, seed=3)
        torch.manual_seed(7)  # dropout draws
        model.train()
        train_out = model(data)
        model.eval()
        with torch.no_grad():
            outs.append((train_out.prediction.detach(), model(data).prediction))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    other = build(name, seed=4).eval()
    with torch.no_grad():
        assert not torch.equal(other(data).prediction, outs[0][1])


# --- gradients ------------------------------------------------------------------------------

QA_VARIANTS = {
    "default": {},
    "no_quality_gate": {"quality_gate": False},
    "no_prior": {"prior": False},
    "dense": {"dense_routing": True},
}


def untrained_parameters(name: str, model: MSAModel) -> set[str]:
    """Parameters that legitimately get no gradient in a full-presence training step.

    (With ``prior=False`` the prior is a zero buffer, not a parameter, so it is not listed.)
    """
    if name != "qa_moe":
        return set()
    cfg = model.config
    skip = set()
    if not cfg.quality_gate:
        skip.add("prior")  # no gate, so the prior is never mixed in
    if cfg.nll_weight == 0:
        skip.add("log_var_head.weight")
        skip.add("log_var_head.bias")
    return skip


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("late_fusion", {})] + [("qa_moe", v) for v in QA_VARIANTS.values()],
    ids=["late_fusion"] + [f"qa_moe-{k}" for k in QA_VARIANTS],
)
def test_gradients_reach_every_trainable_parameter(dataset, name, overrides):
    model = build(name, **overrides).train()
    # An odd batch: the L1 gradient of a bias, mean(sign(error)), cannot cancel to exactly 0.
    data = corrupt(dataset["train"].batch(list(range(31))))
    out = model(data)
    if name == "qa_moe":
        assert "uncertainty" in out.aux_losses
    training_loss(model, out, data.labels).backward()
    skip = untrained_parameters(name, model)
    for pname, p in model.named_parameters():
        if pname in skip:
            assert p.grad is None or not p.grad.any(), pname
            continue
        assert p.grad is not None, pname
        if pname.startswith("experts."):
            # Expert e trains iff some sample routed to it (top-k): check each (E, ...) slice.
            used = (out.extras["routing_weights"] > 0).any(dim=0)
            nonzero = p.grad.flatten(1).ne(0).any(dim=1)
            assert torch.equal(nonzero, used), pname
            continue
        assert p.grad.abs().sum() > 0, pname
    if name == "qa_moe" and not model.config.prior:
        assert "prior" not in dict(model.named_parameters())
        assert not model.prior.any() and "prior" not in model.state_dict()


# --- QA-MoE specifics -----------------------------------------------------------------------


@pytest.mark.parametrize("absent", ABSENT_SUBSETS, ids=lambda s: "-".join(sorted(s)) or "none")
def test_qa_moe_reliability_zero_iff_absent(batch, absent):
    model = build("qa_moe").eval()
    with torch.no_grad():
        r = model(drop(corrupt(batch), absent)).extras["reliability"]
    assert r.shape == (batch.size, len(MODALITIES))
    for i, m in enumerate(MODALITIES):
        if m in absent:
            assert torch.equal(r[:, i], torch.zeros(batch.size))
        else:
            assert ((r[:, i] > 0) & (r[:, i] <= 1)).all()


@pytest.mark.parametrize("top_k", [1, 3, 8])
def test_qa_moe_top_k_routing(batch, top_k):
    model = build("qa_moe", top_k=top_k).eval()
    with torch.no_grad():
        out = model(batch)
    w = out.extras["routing_weights"]
    assert w.shape == (batch.size, 8)
    assert torch.equal((w > 0).sum(dim=1), torch.full((batch.size,), top_k))
    assert torch.allclose(w.sum(dim=1), torch.ones(batch.size))
    assert out.extras["prediction_log_var"].shape == (batch.size,)


def test_qa_moe_dense_routing_uses_every_expert(batch):
    model = build("qa_moe", dense_routing=True).train()
    out = model(corrupt(batch))
    w = out.extras["routing_weights"]
    assert (w > 0).all()
    assert torch.allclose(w.sum(dim=1), torch.ones(batch.size))
    assert "load_balance" not in out.aux_losses  # constant under dense routing


def outputs_with_switch(batch: Batch, **switch) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval predictions of the default model and of the same weights with ``switch`` applied."""
    base = build("qa_moe").eval()
    with torch.no_grad():
        base.prior.normal_()  # a prior learned away from its zero init
    other = build("qa_moe", **switch).eval()
    other.load_state_dict(base.state_dict(), strict=False)
    data = drop(corrupt(batch), frozenset({"vision"}))
    with torch.no_grad():
        return base(data).prediction, other(data).prediction


@pytest.mark.parametrize("switch", ["quality_gate", "prior", "dense_routing"])
def test_qa_moe_each_switch_changes_the_computation(batch, switch):
    value = not getattr(QAMoEConfig(), switch)
    base, other = outputs_with_switch(batch, **{switch: value})
    assert not torch.allclose(base, other)


def test_qa_moe_unchanged_switch_is_identical(batch):
    base, other = outputs_with_switch(batch)  # sanity check of the helper itself
    assert torch.equal(base, other)


def test_qa_moe_aux_keys_follow_mode_clean_and_weights(batch):
    noisy = corrupt(batch)
    model = build("qa_moe").train()
    assert set(model(noisy).aux_losses) == {"uncertainty", "load_balance", "sentiment_nll"}
    assert set(model.aux_loss_weights()) == {"uncertainty", "load_balance", "sentiment_nll"}
    assert "uncertainty" not in model(replace(noisy, clean=None)).aux_losses
    model.eval()
    assert set(model(noisy).aux_losses) == {"load_balance"}
    off = build("qa_moe", uncertainty_weight=0.0, balance_weight=0.0, nll_weight=0.0).train()
    assert off(noisy).aux_losses == {}


def test_qa_moe_uncertainty_loss_is_label_free_and_self_supervised(batch):
    model = build("qa_moe", dropout=0.0).train()
    noisy = corrupt(batch)
    loss = model(noisy).aux_losses["uncertainty"]
    relabelled = replace(noisy, labels=torch.randn(batch.size))
    assert torch.equal(loss, model(relabelled).aux_losses["uncertainty"])
    model.zero_grad()
    loss.backward()
    for m in MODALITIES:  # trains the variance heads and pulls the noisy encoding to the clean
        assert model.variance_heads[m].net[0].weight.grad.abs().sum() > 0
        assert model.encoders[m].proj.weight.grad.abs().sum() > 0
    assert model.experts.w1.grad is None and model.mean_head.net[0].weight.grad is None


def test_qa_moe_sentiment_nll_trains_only_the_variance_branch(batch):
    model = build("qa_moe").train()
    model(corrupt(batch)).aux_losses["sentiment_nll"].backward()
    for pname, p in model.named_parameters():
        trained = p.grad is not None and p.grad.any()
        assert trained == pname.startswith("log_var_head."), pname


# --- late fusion specifics ------------------------------------------------------------------


@pytest.mark.parametrize("absent", ABSENT_SUBSETS, ids=lambda s: "-".join(sorted(s)) or "none")
def test_late_fusion_averages_present_modalities(batch, absent):
    model = build("late_fusion").eval()
    with torch.no_grad():
        model.prior.fill_(0.25)
        out = model(drop(batch, absent))
    per = out.extras["per_modality_prediction"]
    assert per.shape == (batch.size, len(MODALITIES))
    keep = [i for i, m in enumerate(MODALITIES) if m not in absent]
    expected = per[:, keep].mean(dim=1) if keep else torch.full((batch.size,), 0.25)
    assert torch.allclose(out.prediction, expected, atol=1e-6)


# --- config validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (QAMoEConfig, {"top_k": 9}, "top_k"),
        (QAMoEConfig, {"top_k": 0}, "top_k"),
        (QAMoEConfig, {"num_experts": 0}, "num_experts"),
        (QAMoEConfig, {"hidden": 0}, "hidden"),
        (QAMoEConfig, {"expert_hidden": 0}, "expert_hidden"),
        (QAMoEConfig, {"dropout": 1.0}, "dropout"),
        (QAMoEConfig, {"uncertainty_weight": -0.1}, "uncertainty_weight"),
        (QAMoEConfig, {"balance_weight": -1.0}, "balance_weight"),
        (QAMoEConfig, {"nll_weight": float("nan")}, "nll_weight"),
        (LateFusionConfig, {"hidden": 0}, "hidden"),
        (LateFusionConfig, {"dropout": -0.1}, "dropout"),
    ],
)
def test_config_errors_start_with_the_field_name(cls, kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: ") as info:
        cls(**kwargs)
    assert str(next(iter(kwargs.values()))) in str(info.value)


def test_default_configs_are_valid():
    assert QAMoEConfig().top_k == 3 and QAMoEConfig().num_experts == 8
    QAMoEConfig(top_k=8, dense_routing=True, quality_gate=False, prior=False)
    LateFusionConfig()


# --- learning -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_learns_the_tiny_preset(dataset, name):
    """200 Adam steps (batch 32, L1) beat the constant train-median predictor by >= 30 % MAE.

    Observed on the current tiny generator: validation MAE 27-53 % of the constant's, so the
    30 % margin (at most 70 %) holds with room; ~1 s (late fusion) and ~2.5 s (QA-MoE) on one
    thread.
    """
    train, valid = dataset["train"], dataset["valid"]
    all_train = train.batch(list(range(len(train))))
    val = valid.batch(list(range(len(valid))))
    constant_mae = (val.labels - all_train.labels.median()).abs().mean().item()

    model = build(name, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(200):
        data = all_train.subset(torch.randperm(len(train), generator=order)[:32])
        loss = training_loss(model, model(data), data.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        mae = (model(val).prediction - val.labels).abs().mean().item()
    assert mae <= 0.70 * constant_mae, (mae, constant_mae)
