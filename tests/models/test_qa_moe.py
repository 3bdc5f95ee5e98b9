"""QA-MoE specifics: reliability, routing, sparse expert dispatch, switches, auxiliary losses.

The contract tests shared with every model (absence patterns, gradients, text transformer
path, bf16 autocast, search space, learning) are in ``test_models.py``.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from model_batches import (
    ABSENT_SUBSETS,
    absent_id,
    build_model,
    corrupt,
    drop,
    training_loss,
)
from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.models import MODELS, ModelOutput
from robustmsa.models.qa_moe import GLUExperts, QAMoEConfig
from robustmsa.training.loop import task_loss

SWITCHES = [
    "quality_gate",
    "prior",
    "dense_routing",
    "uncertainty_loss",
    "heteroscedastic_weighting",
]
build = partial(build_model, "qa_moe")  # build(seed=0, **overrides)


# --- reliability and routing ----------------------------------------------------------------


@pytest.mark.parametrize("absent", ABSENT_SUBSETS, ids=absent_id)
def test_reliability_zero_iff_absent(batch, absent):
    model = build().eval()
    with torch.no_grad():
        r = model(drop(corrupt(batch), absent)).extras["reliability"]
    assert r.shape == (batch.size, len(MODALITIES))
    for i, m in enumerate(MODALITIES):
        if m in absent:
            assert torch.equal(r[:, i], torch.zeros(batch.size))
        else:
            assert ((r[:, i] > 0) & (r[:, i] <= 1)).all()


def test_reliability_is_one_over_one_plus_the_mean_variance(batch):
    model = build().eval()
    with torch.no_grad():
        out = model(batch)
        h, _, frames = model._encode(batch)
        for i, m in enumerate(MODALITIES):
            head_input = torch.cat([h[:, i], torch.log1p(frames[:, i : i + 1])], dim=-1)
            log_var = 5.0 * torch.tanh(model.variance_heads[m](head_input) / 5.0)
            expected = 1.0 / (1.0 + log_var.exp().mean(dim=-1))
            assert torch.allclose(out.extras["reliability"][:, i], expected, atol=1e-6)


@pytest.mark.parametrize("top_k", [1, 3, 8])
def test_top_k_routing(batch, top_k):
    model = build(top_k=top_k).eval()
    with torch.no_grad():
        out = model(batch)
    w = out.extras["routing_weights"]
    assert w.shape == (batch.size, 8)
    assert torch.equal((w > 0).sum(dim=1), torch.full((batch.size,), top_k))
    assert torch.allclose(w.sum(dim=1), torch.ones(batch.size))
    assert out.extras["prediction_log_var"].shape == (batch.size,)


def test_dense_routing_uses_every_expert(batch):
    model = build(dense_routing=True).train()
    out = model(corrupt(batch))
    w = out.extras["routing_weights"]
    assert (w > 0).all()
    assert torch.allclose(w.sum(dim=1), torch.ones(batch.size))
    assert "load_balance" not in out.aux_losses  # constant under dense routing


def test_dense_routing_is_top_e(batch):
    """Dense routing is the softmax over all experts, i.e. top-k with k = E."""
    dense, top_all = build(dense_routing=True).eval(), build(top_k=8).eval()
    top_all.load_state_dict(dense.state_dict())
    with torch.no_grad():
        assert torch.allclose(dense(batch).prediction, top_all(batch).prediction, atol=1e-6)


def test_router_mixes_content_and_quality(batch):
    """The quality term moves the router logits; without the gate it does not exist."""
    model = build().eval()
    assert model.router_quality is not None
    with torch.no_grad():
        before = model(batch).extras["routing_weights"]
        model.router_quality.weight.mul_(50.0)
        after = model(batch).extras["routing_weights"]
    assert not torch.allclose(before, after)
    assert build(quality_gate=False).router_quality is None


def test_load_balance_loss_is_switch_style(batch):
    """``E * sum_e f_e P_e``: f_e the share of routing slots, P_e the mean router probability."""
    model = build(dropout=0.0).train()
    out = model(batch)
    with torch.no_grad():
        h, _, _ = model._encode(batch)
        r = out.extras["reliability"]
        u = (r.unsqueeze(-1) * h + (1 - r.unsqueeze(-1)) * model.prior).flatten(1)
        logits = model.router_content(u) + model.router_quality(r)
    fraction = (out.extras["routing_weights"] > 0).float().mean(dim=0) / 3
    expected = 8 * (fraction * logits.softmax(dim=-1).mean(dim=0)).sum()
    assert torch.allclose(out.aux_losses["load_balance"], expected, atol=1e-6)
    assert torch.allclose(fraction.sum(), torch.tensor(1.0))


# --- sparse expert dispatch -----------------------------------------------------------------


def dense_reference(m: GLUExperts, x, index, weight):
    """Every expert on every sample, then the routing weights: what the dispatch must equal."""
    gv = torch.einsum("bd,edf->bef", x, m.w_in) + m.b_in
    gate, value = gv.chunk(2, dim=-1)
    out = torch.einsum("bef,efo->beo", F.silu(gate) * value, m.w_out) + m.b_out
    weights = torch.zeros(x.shape[0], m.num_experts).scatter(-1, index, weight)
    return torch.einsum("be,beh->bh", weights, out)


@pytest.mark.parametrize("kernel", [True, False], ids=["grouped_mm", "expert_loop"])
@pytest.mark.parametrize("row_align", [None, 8], ids=["unpadded", "rows_padded_to_8"])
@pytest.mark.parametrize(
    ("e", "d", "f", "h", "k", "b"),
    [(8, 48, 32, 16, 3, 37), (5, 13, 7, 3, 2, 9), (4, 16, 8, 8, 4, 1), (8, 24, 16, 8, 1, 2)],
)
def test_sparse_dispatch_equals_every_expert_on_every_sample(kernel, row_align, e, d, f, h, k, b):
    if kernel and not hasattr(F, "grouped_mm"):
        pytest.skip("this torch has no grouped_mm")
    torch.manual_seed(0)
    m = GLUExperts(e, d, f, h, dropout=0.0)
    m.use_grouped_mm, m.row_align = kernel, row_align
    x = torch.randn(b, d, requires_grad=True)
    top, index = torch.randn(b, e).topk(k, dim=-1)
    weight = top.softmax(dim=-1)

    out = m(x, index, weight)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in m.parameters()] + [x.grad.clone()]
    m.zero_grad()
    x.grad = None
    ref = dense_reference(m, x, index, weight)
    ref.square().sum().backward()
    assert out.shape == (b, h)
    assert torch.allclose(out, ref, atol=1e-5)
    for got, want in zip(grads, [p.grad for p in m.parameters()] + [x.grad], strict=True):
        assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("b", [1, 6, 40])
def test_each_expert_runs_only_on_its_samples(monkeypatch, b):
    """The experts see B * k rows in all (not B * E), in two grouped GEMMs whatever B is, and
    the loop fallback hands each expert exactly the samples routed to it."""
    torch.manual_seed(0)
    m = GLUExperts(8, 24, 16, 8, dropout=0.0)
    x = torch.randn(b, 24)
    top, index = torch.randn(b, 8).topk(3, dim=-1)
    weight = top.softmax(dim=-1)
    counts = F.one_hot(index, 8).sum(dim=(0, 1))

    if hasattr(F, "grouped_mm"):
        calls = []
        real = F.grouped_mm

        def spy(a, w, *, offs=None, **kw):
            calls.append((a.shape[0], offs.clone()))
            return real(a, w, offs=offs, **kw)

        monkeypatch.setattr(F, "grouped_mm", spy)
        m(x, index, weight)
        assert len(calls) == 2  # gate|value projection, output projection
        for rows, offs in calls:
            assert rows == b * 3
            assert torch.equal(offs, counts.cumsum(0).to(torch.int32))
        monkeypatch.undo()

    m.use_grouped_mm = False
    seen = []
    real_matmul = torch.Tensor.__matmul__

    def spy_matmul(a, w):
        seen.append(a.shape[0])
        return real_matmul(a, w)

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy_matmul)
    m(x, index, weight)
    monkeypatch.undo()
    assert seen == counts.tolist() * 2  # per expert, for each of the two projections


@pytest.mark.skipif(not hasattr(F, "grouped_mm"), reason="this torch has no grouped_mm")
@pytest.mark.parametrize("b", [1, 5, 40])
def test_padded_groups_start_and_end_on_aligned_rows(monkeypatch, b):
    """The CUDA layout (rows per expert padded to 8), exercised on CPU via ``row_align``."""
    torch.manual_seed(0)
    m = GLUExperts(8, 24, 16, 8, dropout=0.0)
    m.row_align = 8
    top, index = torch.randn(b, 8).topk(3, dim=-1)
    counts = F.one_hot(index, 8).sum(dim=(0, 1))
    calls = []
    real = F.grouped_mm

    def spy(a, w, *, offs=None, **kw):
        calls.append((a.shape[0], offs.clone()))
        return real(a, w, offs=offs, **kw)

    monkeypatch.setattr(F, "grouped_mm", spy)
    m(torch.randn(b, 24), index, top.softmax(dim=-1))
    for rows, offs in calls:
        sizes = torch.diff(offs, prepend=offs.new_zeros(1))
        assert rows % 8 == 0 and offs[-1] == rows
        assert (sizes % 8 == 0).all() and (sizes[:-1] >= counts[:-1]).all()
        assert sizes[-1] >= counts[-1]


def test_model_output_matches_the_dense_expert_computation(batch):
    """Through the whole model: the sparse dispatch gives the all-experts prediction."""
    model = build().eval()
    with torch.no_grad():
        out = model(batch)
        h, _, _ = model._encode(batch)
        r = out.extras["reliability"].unsqueeze(-1)
        u = (r * h + (1 - r) * model.prior).flatten(1)
        w = out.extras["routing_weights"]
        index = w.topk(3, dim=-1).indices
        mixed = dense_reference(model.experts, u, index, w.gather(1, index))
        expected = model.mean_head(mixed).squeeze(-1)
    assert torch.allclose(out.prediction, expected, atol=1e-5)


# --- switches -------------------------------------------------------------------------------


def outputs_with_switch(batch: Batch, **switch) -> tuple[ModelOutput, ModelOutput, float, float]:
    """Training-mode outputs (same dropout draws) and losses of the default model and of the
    same weights with ``switch`` applied, on a corrupted batch with vision absent."""
    base = build()
    with torch.no_grad():
        base.prior.normal_()  # a prior learned away from its zero init
    other = build(**switch)
    other.load_state_dict(base.state_dict(), strict=False)
    data = drop(corrupt(batch), frozenset({"vision"}))
    results = []
    for model in (base, other):
        model.train()
        torch.manual_seed(11)
        out = model(data)
        results.append((out, training_loss(model, out, data.labels).item()))
    (a, la), (b, lb) = results
    return a, b, la, lb


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_is_a_config_field_and_changes_the_computation(batch, switch):
    default = getattr(QAMoEConfig(), switch)
    assert isinstance(default, bool)
    base, other, base_loss, other_loss = outputs_with_switch(batch, **{switch: not default})
    assert base_loss != other_loss
    if switch == "uncertainty_loss":
        # A training objective only: the prediction is the same, the loss is not.
        assert torch.equal(base.prediction, other.prediction)
        assert "uncertainty" in base.aux_losses and "uncertainty" not in other.aux_losses
    elif switch == "heteroscedastic_weighting":
        assert torch.equal(base.prediction, other.prediction)  # the same weights, unweighted
        assert base.task_weight is not None and other.task_weight is None
    else:
        assert not torch.allclose(base.prediction, other.prediction)


def test_unchanged_switch_is_identical(batch):
    base, other, base_loss, other_loss = outputs_with_switch(batch)  # the helper's sanity check
    assert torch.equal(base.prediction, other.prediction) and base_loss == other_loss


def test_no_quality_gate_ignores_reliability(batch):
    """Without the gate, a different variance estimate changes nothing downstream."""
    model = build(quality_gate=False).eval()
    with torch.no_grad():
        before = model(batch).prediction
        for head in model.variance_heads.values():
            head.net[-1].bias.add_(3.0)
        after = model(batch)
    assert torch.equal(before, after.prediction)
    assert (after.extras["reliability"] < 0.5).all()  # still computed, for inspection


def test_no_prior_fades_unreliable_modalities_to_zero(batch):
    model = build(prior=False).eval()
    with torch.no_grad():
        for head in model.variance_heads.values():  # huge variance: r -> ~0.007
            head.net[-1].bias.fill_(50.0)
        absent_all = model(drop(batch, frozenset(MODALITIES))).prediction
        unreliable = model(batch).prediction
    assert torch.allclose(unreliable, absent_all, atol=0.05)


# --- auxiliary losses ----------------------------------------------------------------------


def test_aux_keys_follow_mode_clean_and_weights(batch):
    noisy = corrupt(batch)
    model = build().train()
    assert set(model(noisy).aux_losses) == {"uncertainty", "load_balance", "sentiment_nll"}
    assert set(model.aux_loss_weights()) == {"uncertainty", "load_balance", "sentiment_nll"}
    assert "uncertainty" not in model(replace(noisy, clean=None)).aux_losses
    model.eval()
    assert set(model(noisy).aux_losses) == {"load_balance"}
    off = build(uncertainty_weight=0.0, balance_weight=0.0, nll_weight=0.0).train()
    assert off(noisy).aux_losses == {}
    assert "uncertainty" not in build(uncertainty_loss=False).train()(noisy).aux_losses


def test_aux_losses_are_float32_scalars(batch):
    out = build().train()(corrupt(batch))
    for name, value in out.aux_losses.items():
        assert value.dim() == 0 and value.dtype == torch.float32, name


def test_uncertainty_loss_is_label_free_and_self_supervised(batch):
    model = build(dropout=0.0).train()
    noisy = corrupt(batch)
    loss = model(noisy).aux_losses["uncertainty"]
    relabelled = replace(noisy, labels=torch.randn(batch.size))
    assert torch.equal(loss, model(relabelled).aux_losses["uncertainty"])
    model.zero_grad()
    loss.backward()
    for m in MODALITIES:  # trains the variance heads and pulls the noisy encoding to the clean
        assert model.variance_heads[m].net[0].weight.grad.abs().sum() > 0
        assert model.encoders[m].proj.weight.grad.abs().sum() > 0
    assert model.experts.w_in.grad is None and model.mean_head.net[0].weight.grad is None


def test_uncertainty_target_is_the_clean_encoding_without_dropout(batch):
    model = build(dropout=0.5).train()
    with torch.no_grad():
        target, _, _ = model._encode(batch, deterministic=True)
        noisy_a, _, _ = model._encode(batch)
        noisy_b, _, _ = model._encode(batch)
    assert model.training  # the deterministic pass did not flip the mode
    assert not torch.equal(noisy_a, noisy_b)  # dropout is on for the input encoding ...
    with torch.no_grad():
        assert torch.equal(target, model.eval()._encode(batch)[0])  # ... never for the target

    # Without dropout and with clean == input, only the variance term of the NLL remains.
    model = build(dropout=0.0).train()
    loss = model(replace(batch, clean=batch)).aux_losses["uncertainty"]
    with torch.no_grad():
        h, _, frames = model._encode(batch)
        log_var = torch.stack(
            [
                5.0
                * torch.tanh(
                    model.variance_heads[m](torch.cat([h[:, i], frames[:, i : i + 1].log1p()], -1))
                    / 5.0
                )
                for i, m in enumerate(MODALITIES)
            ],
            dim=1,
        )
    assert torch.allclose(loss, (0.5 * log_var).mean(), atol=1e-6)


def test_higher_noise_gives_lower_reliability_after_training(tiny_splits):
    """The heteroscedastic objective alone (labels unused) learns: noisier inputs end up with
    higher variance, i.e. lower reliability."""
    train = tiny_splits["train"]
    data = train.batch(list(range(64)))
    model = build(dropout=0.0)
    params = list(model.variance_heads.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(40):
        scale = 0.2 if step % 2 else 2.0
        noisy = replace(
            data,
            features={
                m: x + scale * torch.randn(x.shape, generator=gen) * data.masks[m].unsqueeze(-1)
                for m, x in data.features.items()
            },
            clean=data,
        )
        loss = model(noisy).aux_losses["uncertainty"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        r = {}
        for scale in (0.2, 2.0):
            noisy = replace(
                data,
                features={
                    m: x + scale * torch.randn(x.shape, generator=gen) * data.masks[m][..., None]
                    for m, x in data.features.items()
                },
            )
            r[scale] = model(noisy).extras["reliability"].mean(dim=0)
    assert (r[2.0] < r[0.2]).all(), r


def test_sentiment_nll_trains_only_the_variance_branch(batch):
    model = build().train()
    model(corrupt(batch)).aux_losses["sentiment_nll"].backward()
    for pname, p in model.named_parameters():
        trained = p.grad is not None and p.grad.any()
        assert trained == pname.startswith("log_var_head."), pname


# --- search space ---------------------------------------------------------------------------


def test_search_space_bounds_top_k_by_num_experts():
    space = {p["name"]: p for p in MODELS["qa_moe"].search_space}
    assert space["model.params.top_k"]["high"] == "model.params.num_experts"
    names = list(space)
    assert names.index("model.params.num_experts") < names.index("model.params.top_k")
    assert space["model.params.uncertainty_weight"]["log"] is True


# --- what the reliability and the heteroscedastic branch see and do -------------------------


def test_reliability_sees_how_many_frames_survived(batch):
    """Audio frames all alike: the pooled encoding is the same from all frames or from two, so
    only the frame count tells the variance head that most of the input is gone."""
    model = build().eval()
    audio = batch.features["audio"][:, :1].expand_as(batch.features["audio"]).clone()
    every = torch.ones_like(batch.masks["audio"])
    two = every.clone()
    two[:, 2:] = False
    present = {**batch.present, "audio": torch.ones_like(batch.present["audio"])}
    whole = replace(
        batch,
        features={**batch.features, "audio": audio},
        masks={**batch.masks, "audio": every},
        present=present,
    )
    cut = replace(
        whole,
        features={**whole.features, "audio": audio * two.unsqueeze(-1)},
        masks={**whole.masks, "audio": two},
    )
    a = MODALITIES.index("audio")
    with torch.no_grad():
        h_whole, _, frames_whole = model._encode(whole)
        h_cut, _, frames_cut = model._encode(cut)
        r_whole = model(whole).extras["reliability"][:, a]
        r_cut = model(cut).extras["reliability"][:, a]
    torch.testing.assert_close(h_whole[:, a], h_cut[:, a], atol=1e-5, rtol=0)
    assert (frames_cut[:, a] == 2).all() and (frames_whole[:, a] > 2).all()
    assert (r_whole - r_cut).abs().min() > 1e-4


def test_the_heteroscedastic_branch_down_weights_the_samples_it_finds_noisy(batch):
    model = build(dropout=0.0).train()
    with torch.no_grad():  # a branch that has learned to tell samples apart
        model.log_var_head.weight.normal_(0.0, 5.0)
    data = corrupt(batch)
    out = model(data)
    s = out.extras["prediction_log_var"]
    assert s.std() > 0.1
    expected = torch.exp(-s) / torch.exp(-s).mean()
    torch.testing.assert_close(out.task_weight, expected)
    # Through the training loop's task loss: each sample's gradient is its weight over B.
    prediction = out.prediction.detach().requires_grad_()
    task_loss(replace(out, prediction=prediction), data.labels, model).backward()
    torch.testing.assert_close(prediction.grad.abs(), expected / batch.size)
    assert prediction.grad[s.argmax()].abs() < prediction.grad[s.argmin()].abs()
