"""Contract, robustness-to-absence, gradient, text-input, search-space and learning tests.

The contract tests (absence patterns, constant all-absent prediction, ignored absent content,
seeding) run for every registered model; the stricter ones (every trainable parameter gets a
gradient, the text transformer path, bf16 autocast, the search space, learning) for late
fusion and QA-MoE, whose own specifics are in ``test_qa_moe.py`` (and the text input's in
``test_text_input.py``).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from model_batches import (
    ABSENT_SUBSETS,
    DIMS,
    SMALL_BERT,
    SMALL_MULT,
    absent_id,
    assert_finite,
    build_model,
    corrupt,
    drop,
    training_loss,
    with_tokens,
)
from robustmsa.config import from_dict
from robustmsa.data.batch import MODALITIES
from robustmsa.errors import ConfigError
from robustmsa.models import MODELS, MSAModel
from robustmsa.models.late_fusion import LateFusionConfig
from robustmsa.models.qa_moe import QAMoEConfig
from robustmsa.models.text_input import TextInputConfig

MODEL_NAMES = sorted(MODELS)
OWN = ["late_fusion", "qa_moe"]  # the models whose strict tests live in this file


# --- contract and absence -------------------------------------------------------------------


def test_both_models_registered():
    assert {"late_fusion", "qa_moe"} <= set(MODELS)
    assert MODELS["late_fusion"].config_cls is LateFusionConfig
    assert MODELS["qa_moe"].config_cls is QAMoEConfig


@pytest.mark.parametrize("absent", ABSENT_SUBSETS, ids=absent_id)
@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_every_absence_pattern(batch, name, batch_size, absent):
    model = build_model(name)
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
        if name in OWN and p.requires_grad:
            assert p.grad is not None, pname
        assert p.grad is None or torch.isfinite(p.grad).all(), pname
    model.eval()
    with torch.no_grad():
        assert_finite(model(data))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_all_absent_predicts_one_constant(batch, name):
    """With nothing observed the prediction cannot depend on the sample."""
    model = build_model(name).eval()
    with torch.no_grad():
        prediction = model(drop(batch, frozenset(MODALITIES))).prediction
    assert torch.allclose(prediction, prediction[0].expand_as(prediction))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_absent_modality_content_is_ignored(batch, name):
    """Garbage features left on an absent modality (present False) change nothing."""
    model = build_model(name).eval()
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
        model = build_model(name, seed=3)
        torch.manual_seed(7)  # dropout draws
        model.train()
        train_out = model(data)
        model.eval()
        with torch.no_grad():
            outs.append((train_out.prediction.detach(), model(data).prediction))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    other = build_model(name, seed=4).eval()
    with torch.no_grad():
        assert not torch.equal(other(data).prediction, outs[0][1])


# --- gradients ------------------------------------------------------------------------------

QA_VARIANTS = {
    "default": {},
    "no_quality_gate": {"quality_gate": False},
    "no_prior": {"prior": False},
    "dense": {"dense_routing": True},
    "no_uncertainty_loss": {"uncertainty_loss": False},
    "no_gate_no_uncertainty": {"quality_gate": False, "uncertainty_loss": False},
    "text_transformer": {"text": SMALL_BERT},
}
GRADIENT_CASES = [("late_fusion", {}), ("late_fusion", {"text": SMALL_BERT})] + [
    ("qa_moe", v) for v in QA_VARIANTS.values()
]
GRADIENT_IDS = ["late_fusion", "late_fusion-text_transformer"] + [
    f"qa_moe-{k}" for k in QA_VARIANTS
]


def untrained_parameters(name: str, model: MSAModel) -> set[str]:
    """Parameter name prefixes that legitimately get no gradient in a full-presence training
    step under corruption.

    (With ``prior=False`` the prior is a zero buffer, not a parameter, so it is not listed.)
    """
    if name != "qa_moe":
        return set()
    cfg = model.config
    skip = set()
    if not cfg.quality_gate:
        skip.add("prior")  # no gate, so the prior is never mixed in
        if not (cfg.uncertainty_loss and cfg.uncertainty_weight > 0):
            skip.add("variance_heads.")  # reliability feeds neither gate, router nor a loss
    if cfg.nll_weight == 0:
        skip.add("log_var_head.")
    return skip


@pytest.mark.parametrize(("name", "overrides"), GRADIENT_CASES, ids=GRADIENT_IDS)
def test_gradients_reach_every_trainable_parameter(tiny_splits, name, overrides):
    model = build_model(name, **overrides).train()
    # An odd batch: the L1 gradient of a bias, mean(sign(error)), cannot cancel to exactly 0.
    data = corrupt(with_tokens(tiny_splits["train"].batch(list(range(31)))))
    out = model(data)
    if name == "qa_moe":
        cfg = model.config
        assert ("uncertainty" in out.aux_losses) == cfg.uncertainty_loss
    training_loss(model, out, data.labels).backward()
    skip = untrained_parameters(name, model)
    checked = 0
    for pname, p in model.named_parameters():
        if any(pname.startswith(prefix) for prefix in skip):
            assert p.grad is None or not p.grad.any(), pname
            continue
        assert p.requires_grad, pname
        assert p.grad is not None, pname
        checked += 1
        if pname.startswith("experts."):
            # Expert e trains iff some sample routed to it (top-k): check each (E, ...) slice.
            used = (out.extras["routing_weights"] > 0).any(dim=0)
            nonzero = p.grad.flatten(1).ne(0).any(dim=1)
            assert torch.equal(nonzero, used), pname
            continue
        assert p.grad.abs().sum() > 0, pname
    if "text" in overrides:  # the BERT encoder's parameters were among them
        assert any(n.startswith("text_input.encoder.") for n, _ in model.named_parameters())
    assert checked > 0
    if name == "qa_moe" and not model.config.prior:
        assert "prior" not in dict(model.named_parameters())
        assert not model.prior.any() and "prior" not in model.state_dict()


# --- text through a transformer -------------------------------------------------------------


@pytest.mark.parametrize("absent", ABSENT_SUBSETS, ids=absent_id)
@pytest.mark.parametrize("name", OWN)
def test_text_transformer_path_with_tokens(batch, name, absent):
    model = build_model(name, text=SMALL_BERT)
    assert model.text_input.encoder is not None
    data = drop(corrupt(with_tokens(batch)), absent)
    model.train()
    out = model(data)
    assert out.prediction.shape == (batch.size,)
    assert_finite(out)
    training_loss(model, out, data.labels).backward()
    word_grad = model.text_input.encoder.embeddings.word_embeddings.weight.grad
    assert word_grad is not None and torch.isfinite(word_grad).all()
    assert (word_grad.abs().sum() > 0) == ("text" not in absent)
    model.eval()
    with torch.no_grad():
        assert_finite(model(data))
        if "text" in absent:  # the token ids of an absent text do not matter
            other = replace(data, tokens=torch.full_like(data.tokens, 2000))
            assert torch.equal(model(data).prediction, model(other).prediction)


@pytest.mark.parametrize("name", OWN)
def test_text_transformer_needs_tokens(batch, name):
    model = build_model(name, text=SMALL_BERT)
    with pytest.raises(ValueError, match="no token ids"):
        model(batch)


# --- bf16 autocast ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [{}, SMALL_BERT], ids=["features", "transformer"])
@pytest.mark.parametrize("name", OWN)
def test_bf16_autocast_forward_backward(batch, name, text):
    """The CPU stand-in for the GPU bf16 autocast path: finite, float32 outputs and losses."""
    model = build_model(name, text=text).train()
    data = drop(corrupt(with_tokens(batch)), frozenset({"audio"}))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(data)
        loss = training_loss(model, out, data.labels)
    assert out.prediction.dtype == torch.float32
    for key, value in out.aux_losses.items():
        assert value.dtype == torch.float32, key
    assert_finite(out)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bf16_autocast_on_cuda_matches_float32(batch, name):
    """The GPU path: every model trains a step on CUDA under bf16 autocast (finite float32
    outputs, losses and gradients, all on the device) and its prediction stays close to the
    float32 one on the same weights."""
    model = build_model(name, **(SMALL_MULT if name in ("mult", "promma") else {}))
    model = model.to("cuda").train()
    data = drop(corrupt(batch), frozenset({"audio"})).to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(data)
        loss = training_loss(model, out, data.labels)
    assert out.prediction.dtype == torch.float32 and out.prediction.device.type == "cuda"
    assert_finite(out)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is None or (p.grad.is_cuda and torch.isfinite(p.grad).all()), pname
    model.eval()
    with torch.no_grad():
        exact = model(data).prediction
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = model(data).prediction
    assert torch.allclose(fast, exact, atol=0.1, rtol=0.05)


# --- search space ----------------------------------------------------------------------------

CHARACTERISTIC = {
    "late_fusion": {"hidden", "dropout"},
    "qa_moe": {"num_experts", "top_k", "uncertainty_weight", "hidden", "balance_weight"},
}


@pytest.mark.parametrize("name", OWN)
def test_search_space_is_valid_and_every_point_builds(batch, name):
    import optuna
    from robustmsa.search.space import define_by_run

    space = MODELS[name].search_space
    searched = {p["name"].removeprefix("model.params.") for p in space}
    assert CHARACTERISTIC[name] <= searched
    config = from_dict({"model": {"name": name}, "search": {"space": list(space)}})
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for _ in range(6):
        trial = study.ask()
        define_by_run(config.kind_section.space)(trial)
        point = from_dict({"model": {"name": name}}, dict(trial.params))
        model = MODELS[name].build(point.model_params(), DIMS).eval()
        with torch.no_grad():
            assert_finite(model(batch))
        study.tell(trial, 0.0)


# --- late fusion specifics ------------------------------------------------------------------


@pytest.mark.parametrize("absent", ABSENT_SUBSETS, ids=absent_id)
def test_late_fusion_averages_present_modalities(batch, absent):
    model = build_model("late_fusion").eval()
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
        (QAMoEConfig, {"uncertainty_loss": "yes"}, "uncertainty_loss"),
        (QAMoEConfig, {"dense_routing": 1}, "dense_routing"),
        (QAMoEConfig, {"hidden": 1.5}, "hidden"),
        (LateFusionConfig, {"hidden": 0}, "hidden"),
        (LateFusionConfig, {"dropout": -0.1}, "dropout"),
    ],
)
def test_config_errors_start_with_the_field_name(cls, kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: ") as info:
        cls(**kwargs)
    assert str(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize("name", OWN)
def test_config_errors_through_the_study_config_carry_the_key_path(name):
    with pytest.raises(ConfigError, match=r"^model\.params\.hidden: "):
        from_dict({"model": {"name": name, "params": {"hidden": 0}}})
    with pytest.raises(ConfigError, match=r"^model\.params\.text\.heads: "):
        from_dict({"model": {"name": name, "params": {"text": {"heads": 0}}}})
    with pytest.raises(ConfigError, match=r"^model\.params\.text\.kind: "):
        from_dict({"model": {"name": name, "params": {"text": {"kind": "glove"}}}})
    config = from_dict({"model": {"name": name, "params": {"text": {"kind": "transformer"}}}})
    assert config.model_params().text == TextInputConfig(kind="transformer")


def test_default_configs_are_valid():
    cfg = QAMoEConfig()
    assert cfg.top_k == 3 and cfg.num_experts == 8
    assert cfg.quality_gate and cfg.prior and cfg.uncertainty_loss and not cfg.dense_routing
    assert cfg.text == TextInputConfig()
    QAMoEConfig(top_k=8, dense_routing=True, quality_gate=False, prior=False)
    QAMoEConfig(text={"kind": "transformer", "freeze": True})
    LateFusionConfig()
    assert LateFusionConfig(text={"kind": "transformer"}).text.kind == "transformer"


# --- learning -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OWN)
def test_learns_the_tiny_preset(tiny_splits, name):
    """200 Adam steps (batch 32, L1) beat the constant train-median predictor by >= 30 % MAE.

    Observed on the current tiny generator: validation MAE 27-53 % of the constant's, so the
    30 % margin (at most 70 %) holds with room; ~1 s (late fusion) and ~2.5 s (QA-MoE) on one
    thread.
    """
    train, valid = tiny_splits["train"], tiny_splits["valid"]
    all_train = train.batch(list(range(len(train))))
    val = valid.batch(list(range(len(valid))))
    constant_mae = (val.labels - all_train.labels.median()).abs().mean().item()

    model = build_model(name, seed=0)
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
