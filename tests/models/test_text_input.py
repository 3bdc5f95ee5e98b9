"""`TextInput`: text as precomputed features or as token ids through a BERT encoder.

Everything runs offline: encoders are built from a config, or saved with ``save_pretrained``
into a temporary directory and loaded back from it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from model_batches import DIMS, SMALL_BERT, with_tokens
from robustmsa.config import build as build_config
from robustmsa.data.batch import Batch
from robustmsa.errors import ConfigError
from robustmsa.models.qa_moe import QAMoEConfig
from robustmsa.models.text_input import TextInput, TextInputConfig, coerce_text_config


@pytest.fixture(scope="module")
def batch(tiny_splits) -> Batch:
    return with_tokens(
        tiny_splits["train"].batch(list(range(7))), length=12
    )  # odd: L1 bias grads cannot cancel


def transformer(seed: int = 0, **overrides) -> TextInput:
    torch.manual_seed(seed)
    return TextInput(TextInputConfig(**(SMALL_BERT | overrides)), feature_dim=16)


def absent_text(batch: Batch, rows: list[int]) -> Batch:
    """Text made absent on ``rows`` as the data layer does it (token ids and mask are kept)."""
    present = batch.present["text"].clone()
    present[rows] = False
    masks = batch.masks["text"].clone()
    masks[rows] = False
    return replace(
        batch,
        present={**batch.present, "text": present},
        masks={**batch.masks, "text": masks},
    )


# --- features -------------------------------------------------------------------------------


def test_features_path_hands_the_frames_through(batch):
    text = TextInput(TextInputConfig(), feature_dim=16)
    x, mask = text(batch)
    assert x is batch.features["text"] and mask is batch.masks["text"]
    assert text.out_dim == 16 and text.encoder is None
    assert list(text.parameters()) == []
    # Token ids are not needed on this path.
    x, _ = text(replace(batch, tokens=None, token_mask=None))
    assert x is batch.features["text"]


# --- transformer built from the config ------------------------------------------------------


def test_transformer_from_config_encodes_tokens(batch):
    text = transformer()
    assert text.out_dim == 16 and text.encoder.config.num_hidden_layers == 1
    x, mask = text(batch)
    assert x.shape == (batch.size, 12, 16) and x.dtype == torch.float32
    assert torch.equal(mask, batch.token_mask & batch.present["text"][:, None])
    assert torch.isfinite(x).all()
    assert torch.equal(x[~mask], torch.zeros_like(x[~mask]))  # padding positions are zero


def test_padding_tokens_do_not_change_real_positions(batch):
    text = transformer().eval()
    other = batch.tokens.masked_fill(~batch.token_mask, 2000)  # garbage at padded positions
    with torch.no_grad():
        x, mask = text(batch)
        y, _ = text(replace(batch, tokens=other))
    assert torch.allclose(x[mask], y[mask], atol=1e-5)


def test_absent_text_rows_are_zero_finite_and_ignored(batch):
    text = transformer().train()
    data = absent_text(batch, [0, 3])
    x, mask = text(data)
    assert not mask[[0, 3]].any()
    assert torch.equal(x[[0, 3]], torch.zeros_like(x[[0, 3]]))
    assert torch.isfinite(x).all()
    x.sum().backward()
    for name, p in text.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    # Their token ids do not matter, and the other rows do not see them.
    text.eval()
    scrambled = data.tokens.clone()
    scrambled[[0, 3], 1:] = 777
    with torch.no_grad():
        a, _ = text(data)
        b, _ = text(replace(data, tokens=scrambled))
    assert torch.equal(a, b)


def test_every_row_absent_is_finite(batch):
    text = transformer()
    x, mask = text(absent_text(batch, list(range(batch.size))))
    assert not mask.any() and torch.equal(x, torch.zeros_like(x))


def test_missing_tokens_is_an_error(batch):
    with pytest.raises(ValueError, match="no token ids"):
        transformer()(replace(batch, tokens=None, token_mask=None))


def test_token_ids_outside_the_vocabulary_are_an_error(batch):
    text = transformer(vocab_size=500)
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 500\)"):
        text(batch)


def test_long_sequences_are_cut_to_the_position_table(batch):
    text = transformer(max_tokens=8)
    x, mask = text(batch)  # 12 tokens, 8 positions
    assert x.shape == (batch.size, 8, 16) and mask.shape == (batch.size, 8)
    assert torch.isfinite(x).all()


def test_deterministic_forward_skips_dropout_and_restores_the_mode(batch):
    text = transformer().train()
    with torch.no_grad():
        a, _ = text(batch, deterministic=True)
        b, _ = text(batch, deterministic=True)
        noisy, _ = text(batch)
    assert text.encoder.training
    assert torch.equal(a, b)
    assert not torch.equal(a, noisy)  # BERT's dropout (0.1) is on in training mode
    with torch.no_grad():
        assert torch.equal(a, text.eval()(batch)[0])


def test_fine_tuned_encoder_gets_gradients(batch):
    text = transformer().train()
    x, _ = text(batch)
    x.square().sum().backward()
    grads = {n: p.grad for n, p in text.named_parameters()}
    assert grads and all(g is not None for g in grads.values())
    assert text.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_frozen_encoder_has_no_gradient_and_no_dropout(batch):
    text = transformer(freeze=True)
    assert not any(p.requires_grad for p in text.parameters())
    text.train()
    assert text.training and not text.encoder.training  # frozen: always eval
    a, _ = text(batch)
    b, _ = text(batch)
    assert torch.equal(a, b) and not a.requires_grad
    for p in text.parameters():
        assert p.grad is None


def test_frozen_encoder_inside_a_model_leaves_the_rest_training(batch):
    from robustmsa.models import MODELS

    spec = MODELS["late_fusion"]
    torch.manual_seed(0)
    model = spec.build(spec.config_cls(text=SMALL_BERT | {"freeze": True}), DIMS).train()
    out = model(batch)
    torch.nn.functional.l1_loss(out.prediction, batch.labels).backward()
    for name, p in model.named_parameters():
        if name.startswith("text_input."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# --- pretrained weights from a local directory -----------------------------------------------


def test_pretrained_path_loads_a_saved_bert(batch, tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(5)
    saved = BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=24,  # not the TextInputConfig's hidden: the saved model's size wins
            num_hidden_layers=1,
            num_attention_heads=3,
            intermediate_size=48,
            max_position_embeddings=64,
        ),
        add_pooling_layer=False,
    ).eval()
    saved.save_pretrained(tmp_path / "bert")

    text = TextInput(
        TextInputConfig(kind="transformer", pretrained_path=str(tmp_path / "bert")), 16
    ).eval()
    assert text.out_dim == 24 and text.max_tokens == 64
    loaded = text.encoder.state_dict()
    assert loaded.keys() == saved.state_dict().keys()
    for name, p in saved.state_dict().items():
        assert torch.equal(p, loaded[name]), name
    with torch.no_grad():
        x, mask = text(batch)
        ref = saved(input_ids=batch.tokens, attention_mask=batch.token_mask.long())
    expected = ref.last_hidden_state * mask[..., None]
    assert torch.allclose(x, expected, atol=1e-5)


def test_pretrained_path_that_holds_no_model_names_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"^pretrained_path: cannot load"):
        TextInput(TextInputConfig(kind="transformer", pretrained_path=str(tmp_path / "none")), 16)


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"hidden": 0}, "hidden"),
        ({"hidden": 10, "heads": 3}, "hidden"),
        ({"layers": 0}, "layers"),
        ({"heads": 0}, "heads"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"kind": "rnn"}, "kind"),
        ({"pretrained_path": "/some/bert"}, "pretrained_path"),  # kind is still features
        ({"kind": "transformer", "pretrained_path": ""}, "pretrained_path"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        TextInputConfig(**kwargs)
    with pytest.raises(ValueError, match=rf"^text\.{field}: "):
        coerce_text_config(kwargs)


def test_nested_errors_carry_the_key_path():
    with pytest.raises(ConfigError, match=r"^model\.params\.text\.hidden: "):
        build_config(QAMoEConfig, {"text": {"hidden": 0}}, "model.params")
    with pytest.raises(ConfigError, match=r"^model\.params\.text\.kind: "):
        build_config(QAMoEConfig, {"text": {"kind": "lstm"}}, "model.params")
    with pytest.raises(ConfigError, match=r"^model\.params\.text\.depth: unknown key"):
        build_config(QAMoEConfig, {"text": {"depth": 2}}, "model.params")
    cfg = build_config(QAMoEConfig, {"text": {"kind": "transformer", "freeze": True}}, "p")
    assert cfg.text == TextInputConfig(kind="transformer", freeze=True)
    with pytest.raises(ValueError, match=r"^text: "):
        QAMoEConfig(text="bert")


def test_autocast_bf16_is_finite(batch):
    text = transformer()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x, _ = text(absent_text(batch, [1]))
    assert torch.isfinite(x.float()).all()
