"""MulT (cross-modal transformer baseline): contract, absence, masking, switches, learning."""

from __future__ import annotations

import itertools
from dataclasses import replace
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from model_batches import (
    ABSENT_SUBSETS,
    DIMS,
    SMALL_BERT,
    SMALL_MULT,
    absent_id,
    build_model,
    drop,
    with_tokens,
)
from robustmsa.config import ParamSpace, from_dict
from robustmsa.config import build as build_config
from robustmsa.data.batch import MODALITIES
from robustmsa.errors import ConfigError
from robustmsa.models import MODELS
from robustmsa.models.mult import MaskedAttention, MulTConfig, last_valid
from robustmsa.models.text_input import TextInputConfig

build = partial(build_model, "mult")  # build(seed=0, **overrides)


# --- contract -------------------------------------------------------------------------------


def test_registered_with_a_valid_search_space():
    spec = MODELS["mult"]
    assert spec.config_cls is MulTConfig
    names = {e["name"] for e in spec.search_space}
    assert {"model.params.dim", "model.params.heads", "model.params.layers"} <= names
    for entry in spec.search_space:
        build_config(ParamSpace, dict(entry))
    # Every dim/heads pair the space can draw is a valid config.
    dims = next(e for e in spec.search_space if e["name"] == "model.params.dim")["choices"]
    heads = next(e for e in spec.search_space if e["name"] == "model.params.heads")["choices"]
    for d, h in itertools.product(dims, heads):
        MulTConfig(dim=d, heads=h)
    config = from_dict({"model": {"name": "mult"}, "study": {"kind": "search"}})
    assert [p.name for p in config.kind_section.space] == [e["name"] for e in spec.search_space]


def test_every_search_space_point_builds_and_runs(batch):
    import optuna
    from robustmsa.search.space import define_by_run

    space = MODELS["mult"].search_space
    config = from_dict({"model": {"name": "mult"}, "search": {"space": list(space)}})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(4):
        trial = study.ask()
        define_by_run(config.kind_section.space)(trial)
        point = from_dict({"model": {"name": "mult"}}, dict(trial.params))
        model = MODELS["mult"].build(point.model_params(), DIMS).eval()
        with torch.no_grad():
            assert torch.isfinite(model(batch).prediction).all()
        study.tell(trial, 0.0)


@pytest.mark.parametrize("absent", ABSENT_SUBSETS, ids=absent_id)
@pytest.mark.parametrize("batch_size", [1, 5])
def test_forward_backward_every_absence_pattern(batch, batch_size, absent):
    model = build().train()
    data = drop(batch.subset(torch.arange(batch_size)), absent)
    out = model(data)
    assert out.prediction.shape == (batch_size,) and out.prediction.dtype == torch.float32
    assert torch.isfinite(out.prediction).all()
    assert out.aux_losses == {}
    norms = out.extras["representation_norm"]
    assert norms.shape == (batch_size, 3) and torch.isfinite(norms).all()
    for i, m in enumerate(MODALITIES):  # an absent target pools to exactly zero
        if m in absent:
            assert torch.equal(norms[:, i], torch.zeros(batch_size))
    F.l1_loss(out.prediction, data.labels).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(data).prediction).all()


def test_gradients_reach_every_parameter(tiny_splits):
    model = build().train()
    data = tiny_splits["train"].batch(list(range(31)))  # odd: an L1 bias gradient cannot cancel
    F.l1_loss(model(data).prediction, data.labels).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_all_absent_is_one_constant_and_absent_content_is_ignored(batch):
    model = build().eval()
    with torch.no_grad():
        nothing = model(drop(batch, MODALITIES)).prediction
        assert torch.allclose(nothing, nothing[0].expand_as(nothing))
        absent = drop(batch, {"audio"})
        garbage = replace(
            absent,
            features={**absent.features, "audio": torch.randn_like(batch.features["audio"]) * 9},
            masks={**absent.masks, "audio": batch.masks["audio"]},
        )
        assert torch.equal(model(absent).prediction, model(garbage).prediction)


def test_extra_padding_changes_nothing(batch):
    """Key-padding masks: appending masked frames to every modality leaves the output as is."""
    model = build().eval()
    pad = {m: 5 for m in MODALITIES}
    padded = replace(
        batch,
        features={m: F.pad(x, (0, 0, 0, pad[m])) for m, x in batch.features.items()},
        masks={m: F.pad(k, (0, pad[m])) for m, k in batch.masks.items()},
    )
    with torch.no_grad():
        assert torch.allclose(model(batch).prediction, model(padded).prediction, atol=1e-5)


def test_zero_length_modality_in_the_whole_batch(batch):
    model = build().train()
    data = drop(batch, {"vision"})
    data = replace(
        data,
        features={**data.features, "vision": torch.zeros(batch.size, 0, DIMS["vision"])},
        masks={**data.masks, "vision": torch.zeros(batch.size, 0, dtype=torch.bool)},
    )
    out = model(data)
    assert torch.isfinite(out.prediction).all()
    F.l1_loss(out.prediction, data.labels).backward()


def test_same_seed_same_output(batch):
    outs = []
    for _ in range(2):
        model = build(seed=3)
        torch.manual_seed(7)  # dropout draws
        train_pred = model.train()(batch).prediction.detach()
        with torch.no_grad():
            outs.append((train_pred, model.eval()(batch).prediction))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    with torch.no_grad():
        assert not torch.equal(build(seed=4).eval()(batch).prediction, outs[0][1])


# --- blocks ---------------------------------------------------------------------------------


def test_masked_attention_matches_attention_over_the_valid_keys_and_zeros_rows_without():
    torch.manual_seed(0)
    attn = MaskedAttention(8, 2, 0.0).eval()
    query, key = torch.randn(3, 4, 8), torch.randn(3, 6, 8, requires_grad=True)
    key_mask = torch.tensor(
        [[True, True, False, True, False, False], [False] * 6, [True] * 6], dtype=torch.bool
    )
    out = attn(query, key, key_mask)
    assert torch.equal(out[1], torch.zeros(4, 8))  # no valid key: exactly zero
    for b in (0, 2):  # with keys: the same as attention over the valid keys alone
        valid = key[b : b + 1, key_mask[b]]
        alone = attn(query[b : b + 1], valid, torch.ones(1, valid.shape[1], dtype=torch.bool))
        assert torch.allclose(out[b], alone[0], atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(key.grad).all() and torch.equal(key.grad[1], torch.zeros(6, 8))


def test_last_valid_takes_the_last_true_frame_or_zeros():
    x = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1) + 1
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    assert torch.equal(last_valid(x, mask), torch.tensor([[2.0], [0.0]]))


# --- switches and config --------------------------------------------------------------------


def test_pooling_switch_changes_the_computation(batch):
    base = build(pooling="last").eval()
    other = build(pooling="mean").eval()
    other.load_state_dict(base.state_dict())
    with torch.no_grad():
        assert not torch.allclose(base(batch).prediction, other(batch).prediction)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"dim": 0}, "dim"),
        ({"heads": 0}, "heads"),
        ({"dim": 30, "heads": 4}, "dim"),
        ({"layers": 0}, "layers"),
        ({"self_layers": 0}, "self_layers"),
        ({"kernel_size": 2}, "kernel_size"),
        ({"dropout": 1.0}, "dropout"),
        ({"attn_dropout": -0.1}, "attn_dropout"),
        ({"pooling": "max"}, "pooling"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        MulTConfig(**kwargs)


def test_config_errors_through_the_study_config():
    with pytest.raises(ConfigError, match=r"model\.params\.kernel_size: "):
        from_dict({"model": {"name": "mult", "params": {"kernel_size": 4}}})
    with pytest.raises(ConfigError, match=r"model\.params\.text\.heads: "):
        from_dict({"model": {"name": "mult", "params": {"text": {"heads": 0}}}})
    config = from_dict({"model": {"name": "mult", "params": {"text": {"kind": "transformer"}}}})
    assert config.model_params().text.kind == "transformer"


# --- text as token ids ----------------------------------------------------------------------


@pytest.mark.parametrize("absent", [frozenset(), frozenset({"text"})], ids=["all", "no-text"])
def test_text_transformer_path_with_tokens(batch, absent):
    text = TextInputConfig(**SMALL_BERT)
    model = build(**SMALL_MULT, text=text).train()
    data = drop(with_tokens(batch), absent)
    out = model(data)
    assert torch.isfinite(out.prediction).all()
    F.l1_loss(out.prediction, data.labels).backward()
    grads = [p.grad for p in model.backbone.text_input.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if not absent:
        assert any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="token ids"):
        model(batch)  # no tokens in the batch


@pytest.mark.parametrize("text", ["features", "transformer"])
def test_bf16_autocast_forward_backward(batch, text):
    """The autocast path (here on CPU, standing in for ``torch.autocast("cuda", bfloat16)``)."""
    bert = TextInputConfig(**SMALL_BERT)
    model = build(**SMALL_MULT, text=bert if text == "transformer" else TextInputConfig()).train()
    data = drop(with_tokens(batch), {"audio"})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(data)
        loss = F.l1_loss(out.prediction, data.labels)
    assert out.prediction.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --- learning -------------------------------------------------------------------------------


def test_learns_the_tiny_preset(tiny_splits):
    """100 Adam steps (batch 32, L1) of the small config beat the constant train-median
    predictor by >= 30 % validation MAE (observed: 36 % of the constant's MAE after 100 steps,
    34 % after 150)."""
    train, valid = tiny_splits["train"], tiny_splits["valid"]
    all_train = train.batch(list(range(len(train))))
    val = valid.batch(list(range(len(valid))))
    constant_mae = (val.labels - all_train.labels.median()).abs().mean().item()
    model = build(**SMALL_MULT)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(100):
        data = all_train.subset(torch.randperm(len(train), generator=order)[:32])
        loss = F.l1_loss(model(data).prediction, data.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        mae = (model(val).prediction - val.labels).abs().mean().item()
    assert mae <= 0.70 * constant_mae, (mae, constant_mae)
