"""The per-worker training loop, run in-process with a local reporter."""

from __future__ import annotations

import pytest
import torch
from robustmsa.data.parquet import open_dataset
from robustmsa.evaluation.spectrum import evaluate_spectrum
from robustmsa.evaluation.summaries import spectrum_score
from robustmsa.training.checkpoint import load_state, load_weights
from robustmsa.training.loop import OBJECTIVE, TIMING_PREFIX, build_model, run_training
from robustmsa.training.reporting import LocalReporter
from tiny_training import tiny_config, train


def reevaluated_score(config, dataset, weights) -> float:
    """The validation spectrum score of ``config``'s model with ``weights``, evaluated afresh
    (float32, CPU) on ``dataset``."""
    splits = open_dataset(dataset)
    model = build_model(config, splits["train"].meta.dims)
    model.load_state_dict(weights)
    rows = evaluate_spectrum(
        model, splits, "valid", config.spectrum.protocols, seed=config.spectrum.eval_seed
    )
    return spectrum_score(rows)


def test_reports_every_epoch_with_objective_and_train_metrics(tiny_dataset, tmp_path):
    outcome, reporter = train(tiny_config(tiny_dataset), tmp_path)
    assert [h["epoch"] for h in reporter.history] == [1, 2, 3]
    for h in reporter.history:
        for key in (OBJECTIVE, "train/loss", "train/task_loss", "val/mae", "val/acc7"):
            assert key in h
        assert {"train/aux/uncertainty", "train/aux/load_balance"} <= set(h)
    scores = [h[OBJECTIVE] for h in reporter.history]
    assert outcome.best_score == min(scores)
    assert outcome.best_epoch == scores.index(min(scores)) + 1
    assert len(reporter.checkpoints) == 3
    # The spectrum of the best epoch covers clean + 11 missing + 11 noise points.
    assert len({(r["protocol"], r["level"]) for r in outcome.rows}) == 23


def test_best_checkpoint_restores_the_best_epoch(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset)
    outcome, reporter = train(config, tmp_path)
    state, rows = load_state(reporter.checkpoints[-1])
    assert state["best_epoch"] == outcome.best_epoch
    assert rows == outcome.rows
    weights = load_weights(reporter.checkpoints[-1], best=True)
    score = reevaluated_score(config, tiny_dataset, weights)
    assert score == pytest.approx(outcome.best_score, rel=1e-6)


def results(history: list[dict]) -> list[dict]:
    """The reported numbers without the wall-clock measurements (``time/...``)."""
    return [{k: v for k, v in h.items() if not k.startswith(TIMING_PREFIX)} for h in history]


def test_same_config_and_seed_give_the_same_numbers(tiny_dataset):
    config = tiny_config(tiny_dataset, epochs=2)
    _, first = train(config)
    _, second = train(config)
    assert results(first.history) == results(second.history)
    _, other = train(tiny_config(tiny_dataset, epochs=2, seed=1))
    assert other.history[-1][OBJECTIVE] != first.history[-1][OBJECTIVE]


def test_early_stopping_after_patience_without_improvement(tiny_dataset):
    # A learning rate so small that weights cannot change in float32: the validation score is
    # identical every epoch, so epoch 1 stays best and training stops `patience` epochs later.
    config = tiny_config(tiny_dataset, epochs=10, patience=2, lr=1e-30)
    outcome, reporter = train(config)
    assert [h["epoch"] for h in reporter.history] == [1, 2, 3]
    assert outcome.stopped_early and outcome.best_epoch == 1 and outcome.epochs_run == 3


def test_stop_epoch_follows_patience_rule(tiny_dataset):
    outcome, reporter = train(tiny_config(tiny_dataset, epochs=6, patience=1))
    scores = [h[OBJECTIVE] for h in reporter.history]
    best, expected_stop = float("inf"), 6
    for epoch, score in enumerate(scores, start=1):
        if score < best:
            best = score
        else:
            expected_stop = epoch
            break
    assert outcome.epochs_run == expected_stop == len(scores)


def test_zero_epochs_validates_the_initial_model_once(tiny_dataset):
    outcome, reporter = train(tiny_config(tiny_dataset, epochs=0))
    assert len(reporter.history) == 1
    assert reporter.history[0]["epoch"] == 0
    assert "train/loss" not in reporter.history[0]
    assert outcome.best_epoch == 0 and outcome.rows


def test_sinks_receive_every_epoch(tiny_dataset):
    seen = []
    reporter = LocalReporter(sinks=[lambda metrics, step: seen.append(step)])
    run_training(tiny_config(tiny_dataset, epochs=2), reporter)
    assert seen == [1, 2]


@pytest.mark.parametrize("model", ["qa_moe", "derl", "promma"])
def test_bf16_precision_trains_under_autocast_and_keeps_float32_weights(
    tiny_dataset, tmp_path, model
):
    """``training.precision: bf16`` (CPU autocast here, the same code path as on a GPU): the
    training forward computes in bfloat16, the weights stay float32, the run is reproducible
    and its best checkpoint re-evaluates (in float32) to the logged score."""
    from robustmsa.config import from_dict

    params = {"qa_moe": {"hidden": 16, "expert_hidden": 32}, "derl": {}, "promma": {"dim": 10}}
    base = tiny_config(tiny_dataset, epochs=2).to_dict()
    base["model"] = {"name": model, "params": params[model]}
    base["search"]["space"] = []  # the default space named QA-MoE's parameters
    bf16 = from_dict(base, {"training.precision": "bf16"})
    seen: list[torch.dtype] = []

    def record(module, args, out):
        if isinstance(module, torch.nn.Linear) and module.training:
            seen.append(out.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        outcome, reporter = train(bf16, tmp_path)
    finally:
        hook.remove()
    assert torch.bfloat16 in seen  # the training forward ran under autocast
    weights = load_weights(reporter.checkpoints[-1], best=True)
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float32}
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in reporter.history)
    _, again = train(bf16)
    assert results(again.history) == results(reporter.history)
    _, fp32 = train(from_dict(base))
    assert fp32.history[-1]["train/loss"] != reporter.history[-1]["train/loss"]
    score = reevaluated_score(bf16, tiny_dataset, weights)
    assert score == pytest.approx(outcome.best_score, rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_training_on_cuda(tiny_dataset, tmp_path):
    """The GPU path of the loop: QA-MoE trains on CUDA under bf16 autocast; the checkpoint
    holds float32 weights that re-evaluate on the CPU to about the logged score."""
    config = tiny_config(tiny_dataset, epochs=2, precision="bf16")
    reporter = LocalReporter(checkpoint_root=tmp_path)
    outcome = run_training(config, reporter, device="cuda")
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in reporter.history)
    weights = load_weights(reporter.checkpoints[-1], best=True)
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float32}
    score = reevaluated_score(config, tiny_dataset, weights)
    assert score == pytest.approx(outcome.best_score, rel=1e-3)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated zip"])
def test_unreadable_weights_name_their_file(tmp_path, content):
    from robustmsa.errors import RobustMSAError
    from robustmsa.training.checkpoint import BEST_MODEL_FILE

    (tmp_path / BEST_MODEL_FILE).write_bytes(content)
    with pytest.raises(RobustMSAError, match=rf"{BEST_MODEL_FILE}: not a readable weights file"):
        load_weights(tmp_path, best=True)
