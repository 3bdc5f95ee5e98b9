"""The exact Bayes oracle of the synthetic benchmark (`robustmsa.data.oracle`)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from robustmsa.data.batch import MODALITIES, Batch
from robustmsa.data.oracle import Oracle
from robustmsa.data.parquet import open_dataset
from robustmsa.data.synthetic import GENERATOR_FILE, PRESETS, generate, read_generator
from robustmsa.errors import DataError
from robustmsa.models import MODELS
from robustmsa.spectrum import TrainingSampler, apply_point, build_points, draw

# The tiny shapes with many samples and an unclipped label y = 1.5 s: large-sample statistics
# (calibration, a trained model against the oracle) without the clipping of the label range.
BIG = dataclasses.replace(
    PRESETS["tiny"],
    split_sizes={"train": 2000, "valid": 2000, "test": 2000},
    label_range=(-50.0, 50.0),
)


@pytest.fixture(scope="module")
def oracle(tiny_dataset) -> Oracle:
    return Oracle.load(tiny_dataset)


# The tiny shapes with the `temporal` preset's structure: a 2-frame window (3 places: the
# shortest text is 4 frames) and a polarity cue in audio and vision flipping 30 % of scores.
TEMPORAL = dataclasses.replace(
    PRESETS["tiny"],
    window=2,
    flip_rate=0.3,
    flip_cue={"text": 0.0, "audio": 1.5, "vision": 1.5},
)


@pytest.fixture(scope="module")
def temporal(tmp_path_factory):
    root = generate(TEMPORAL, tmp_path_factory.mktemp("temporal") / "data", seed=2)
    return open_dataset(root), Oracle.load(root)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = generate(BIG, tmp_path_factory.mktemp("big") / "data", seed=1, name="tiny-big")
    return root, open_dataset(root), Oracle.load(root)


def _whole(split) -> Batch:
    return split.batch(np.arange(len(split)))


# --- the reference: brute-force Gaussian conditioning on every observed frame ---------------


def _reference_posterior(
    params, meta, batch: Batch, i: int, start: int | None = None, sign: float = 1.0
) -> tuple[float, float, float]:
    """Mean and variance of ``s`` given the observed frames of sample ``i`` and the hypothesis
    (window ``start``, polarity ``sign``), and the log density of those frames under it (up to
    a constant common to every hypothesis), by conditioning the joint Gaussian of ``s`` and ALL
    observed (standardised, noised) frames, stacked into one vector of ``sum_m n_m d_m``
    entries: no sufficient statistic, no low-rank algebra, no Woodbury.

    Observed frame t of modality m: ``a D (1_W(t) (s_m A^T z + c kappa E^T) + B^T u + C^T n_t
    + sigma eps_t - mu) + lambda e_t`` with ``a = sqrt(1 - lambda^2)``, ``D = diag(1 / std)``
    and ``1_W`` the window (every frame for ``start`` None); ``s = c w . z + tau nu``
    (test-only derivation).
    """
    obs, mean, load, blocks = [], [], [], []
    for m in MODALITIES:
        valid = (batch.masks[m][i] & batch.present[m][i]).numpy()
        if not valid.any():
            continue
        frames = batch.features[m][i].numpy()[valid].astype(np.float64)  # (n, d)
        t = np.flatnonzero(valid)
        inside = np.ones(len(t)) if start is None else ((t >= start) & (t < start + params.window))
        n, d = frames.shape
        rel = batch.reliability.get(m)
        lam = 0.0 if rel is None else float(rel[i, 0])
        a = math.sqrt(1.0 - lam * lam)
        dm = np.diag(1.0 / np.asarray(meta.feature_std[m]))
        mu = np.asarray(meta.feature_mean[m])
        A, B, C = params.A[m], params.B[m], params.C[m]
        sig = params.sigma[m]
        shared = a * a * dm @ B.T @ B @ dm  # (d, d), same for every frame pair
        iid = a * a * dm @ (C.T @ C + sig * sig * np.eye(d)) @ dm + lam * lam * np.eye(d)
        cue = a * sign * dm @ params.cue(m)  # (d,)
        obs.append(frames.reshape(-1))
        mean.append((-a * dm @ mu)[None, :] + inside[:, None] * cue[None, :])
        load.append(np.kron(inside[:, None], a * params.s[m] * dm @ A.T))  # (n d, K)
        blocks.append(np.kron(np.ones((n, n)), shared) + np.kron(np.eye(n), iid))
    var_s = float(params.w @ params.w + params.tau**2)
    if not obs:
        return 0.0, var_s, 0.0
    size = sum(len(o) for o in obs)
    cov = np.zeros((size, size))
    at = 0
    for blk in blocks:  # modality-private terms: block diagonal
        cov[at : at + len(blk), at : at + len(blk)] = blk
        at += len(blk)
    lz = np.concatenate(load)  # (size, K)
    cov += lz @ lz.T  # the shared latent z ~ N(0, I)
    cross = sign * lz @ params.w  # Cov(obs, s)
    resid = np.concatenate(obs) - np.concatenate([x.reshape(-1) for x in mean])
    sol = np.linalg.solve(cov, np.column_stack([resid, cross]))
    log_density = -0.5 * float(resid @ sol[:, 0]) - 0.5 * np.linalg.slogdet(cov)[1]
    return float(cross @ sol[:, 0]), float(var_s - cross @ sol[:, 1]), log_density


def _corrupted_batches(split) -> list[Batch]:
    batch = split.batch(np.arange(12))
    sampled = TrainingSampler(p_corrupt=1.0, p_drop=0.3)(batch, torch.Generator().manual_seed(0))
    mixed = apply_point(
        batch,
        {"text": (0.6, 0.4), "audio": (1.0, 0.0), "vision": (0.2, 0.7)},
        seed=0,
        stream_key="reference",
        digest=split.meta.digest,
    )
    text_gone = apply_point(
        batch, {"text": (0.0, 1.0)}, seed=0, stream_key="gone", digest=split.meta.digest
    )
    return [batch, sampled, mixed, text_gone]


def test_matches_brute_force_conditioning_on_all_frames(tiny_splits, oracle):
    """Exact agreement: both use the same float32 observations and float64 parameters and differ
    only in the algebra (frame sums, Woodbury and Schur complements in K + P + 2 + Q dims vs
    dense conditioning in up to ~260 dims), so float64 round-off (<< 1e-9 at these condition
    numbers) is the only difference; 1e-7 is generous yet any modelling slip shows at >= 1e-3."""
    split = tiny_splits["valid"]
    params = read_generator(split.path.parent / GENERATOR_FILE)
    for batch in _corrupted_batches(split):
        mean, var = oracle.posterior_score(batch).flat()  # one component: no window, no cue
        ref = [_reference_posterior(params, split.meta, batch, i) for i in range(batch.size)]
        ref_mean = torch.tensor([r[0] for r in ref], dtype=torch.float64)  # (B,)
        ref_var = torch.tensor([r[1] for r in ref], dtype=torch.float64)
        torch.testing.assert_close(mean, ref_mean, atol=1e-7, rtol=0)
        torch.testing.assert_close(var, ref_var, atol=1e-7, rtol=0)
        expected = oracle.label_map(ref_mean).to(torch.float32)
        torch.testing.assert_close(oracle.predict(batch), expected, atol=1e-6, rtol=0)
    # The references differ from the prior: the comparison is not vacuous.
    assert ref_var.max() < 0.9 * (params.w @ params.w + params.tau**2)


def test_posterior_is_calibrated_on_generated_labels(big):
    """The oracle's Gaussian posterior of the score matches the generator's own draws.

    With the unclipped map y = 1.5 s, ``PIT = Phi((y / 1.5 - mean) / sqrt(var))`` is exactly
    uniform when the posterior is right. 2000 samples: each quartile's share has standard error
    sqrt(.25 * .75 / 2000) = 0.0097, so 0.04 is 4 standard errors; the mean squared z-score has
    standard error sqrt(2 / 2000) = 0.032, so 0.13 is 4. A wrong variance or mean offset (e.g.
    forgetting the standardisation or a factor a) moves these by far more.
    """
    _, splits, orc = big
    split = splits["valid"]
    batch = _whole(split)
    points = [
        {},
        {m: (0.5, 0.5) for m in MODALITIES},
        {"text": (0.9, 0.2), "audio": (0.3, 0.0), "vision": (0.0, 0.8)},
    ]
    for point in points:
        corrupted = apply_point(batch, point, seed=3, stream_key="pit", digest=split.meta.digest)
        mean, var = orc.posterior_score(corrupted).flat()
        score = corrupted.labels.double() / orc.label_map.scale
        z = (score - mean) / var.sqrt()
        pit = torch.special.ndtr(z)
        shares = torch.histc(pit, bins=4, min=0.0, max=1.0) / len(pit)
        assert torch.all((shares - 0.25).abs() < 0.04), (point, shares)
        assert abs(float((z * z).mean()) - 1.0) < 0.13, point


def test_the_temporal_mixture_matches_brute_force_conditioning(temporal):
    """Every component of the mixture (window start x polarity): its weight, from the log
    density of the frames under it by dense conditioning plus its prior, and the conditional
    mean and variance of ``s``, agree with the oracle's window sums, Woodbury and Schur
    algebra to float64 round-off (same tolerances as the test above)."""
    splits, orc = temporal
    split = splits["valid"]
    params = orc.params
    hypotheses = orc.hypotheses()
    assert hypotheses == [(t0, c) for t0 in range(3) for c in (1.0, -1.0)]
    prior = np.log(
        [(1 - params.flip_rate if c > 0 else params.flip_rate) / 3 for _, c in hypotheses]
    )
    spread = 0.0
    for batch in _corrupted_batches(split):
        post = orc.posterior_score(batch)
        for i in range(batch.size):
            ref = np.array(
                [_reference_posterior(params, split.meta, batch, i, t0, c) for t0, c in hypotheses]
            )  # (H, 3): mean, var, log density
            weight = torch.softmax(torch.from_numpy(ref[:, 2] + prior), dim=0)
            torch.testing.assert_close(post.weight[i], weight, atol=1e-7, rtol=0)
            torch.testing.assert_close(post.mean[i], torch.from_numpy(ref[:, 0]), atol=1e-7, rtol=0)
            torch.testing.assert_close(post.var[i], torch.from_numpy(ref[:, 1]), atol=1e-7, rtol=0)
            spread = max(spread, float(weight.max() - weight.min()))
        # The median: the mixture's CDF is 1/2 there, and the label map of it is the prediction.
        median = post.quantile(0.5)
        torch.testing.assert_close(
            post.cdf(median), torch.full_like(median, 0.5), atol=1e-9, rtol=0
        )
        expected = orc.label_map(median).to(torch.float32)
        torch.testing.assert_close(orc.predict(batch), expected, atol=0, rtol=0)
    # The frames move the weights far from the prior: the comparison is not vacuous.
    assert spread > 0.5


def test_the_temporal_posterior_is_calibrated_on_generated_labels(tmp_path):
    """The mixture posterior matches the generator's draws (window, cue and flip included):
    with the unclipped map y = 1.5 s, ``PIT = F(y / 1.5)`` under the oracle's mixture CDF is
    uniform when both agree. 2000 samples: quartile shares within 0.04 are 4 standard errors
    (as the Gaussian case above). Generating with the window or the cue misplaced, or the
    oracle ignoring the flip, puts a quartile far outside (a flip ignored makes the 25 %
    flipped scores land in the tails)."""
    big = dataclasses.replace(BIG, window=2, flip_rate=0.3, flip_cue=TEMPORAL.flip_cue)
    root = generate(big, tmp_path / "big", seed=4, name="temporal-big")
    split, orc = open_dataset(root)["valid"], Oracle.load(root)
    pooled = Oracle.load(root, pooled=True)
    batch = _whole(split)
    for point in ({}, {"text": (0.5, 0.3), "audio": (0.3, 0.0), "vision": (0.0, 0.5)}):
        corrupted = apply_point(batch, point, seed=3, stream_key="pit", digest=split.meta.digest)
        for oracle in (orc, pooled):
            post = oracle.posterior_score(corrupted)
            pit = post.cdf(corrupted.labels.double() / orc.label_map.scale)
            shares = torch.histc(pit, bins=4, min=0.0, max=1.0) / len(pit)
            assert torch.all((shares - 0.25).abs() < 0.04), (point, oracle.pooled, shares)
    # Seeing the frames beats seeing their mean when the signal sits in a window.
    full_mae = (orc.predict(batch) - batch.labels).abs().mean()
    pooled_mae = (pooled.predict(batch) - batch.labels).abs().mean()
    assert pooled_mae > full_mae + 0.05, (pooled_mae, full_mae)
    # The cue is learnable: on clean data the oracle is sure of the polarity most of the time.
    clean = orc.posterior_score(batch)
    flipped = clean.weight.reshape(len(split), -1, 2)[:, :, 1].sum(dim=1)  # P(c = -1 | obs)
    assert float(torch.minimum(flipped, 1 - flipped).mean()) < 0.15


def test_without_a_window_the_frame_mean_is_sufficient(tiny_splits, tiny_dataset, oracle):
    """The pooled oracle (step 9) sees only each modality's frame mean; on a dataset without a
    window the mean is a sufficient statistic, so its posterior is the full one."""
    pooled = Oracle.load(tiny_dataset, pooled=True)
    for batch in _corrupted_batches(tiny_splits["valid"]):
        full, mean_only = oracle.posterior_score(batch), pooled.posterior_score(batch)
        torch.testing.assert_close(mean_only.mean, full.mean, atol=1e-9, rtol=0)
        torch.testing.assert_close(mean_only.var, full.var, atol=1e-9, rtol=0)


def _curve_mae(oracle: Oracle, split, protocol: str, seeds=range(4)) -> np.ndarray:
    """Oracle MAE along a protocol's curve, averaged over corruption seeds (common random
    numbers along the curve: one `draw` per seed reused by every level)."""
    batch = _whole(split)
    points = build_points([f"{protocol}@all"])
    maes = np.zeros(len(points))
    for seed in seeds:
        draws = draw(batch, MODALITIES, seed=seed, stream_key="eval", digest=split.meta.digest)
        for j, p in enumerate(points):
            corrupted = apply_point(
                batch, p.point, seed=seed, stream_key="eval", digest=split.meta.digest, draws=draws
            )
            maes[j] += (oracle.predict(corrupted) - corrupted.labels).abs().mean().item()
    return maes / len(seeds)


@pytest.mark.parametrize("protocol", ["missing", "noise"])
def test_mae_rises_along_the_spectrum(tiny_splits, oracle, protocol):
    """Less information never helps the Bayes predictor in expectation. On 48 samples the
    empirical curve can still dip by sampling noise (single corruption seeds dip by up to 0.02);
    averaged over 4 corruption seeds it rose at every step for dataset seeds 0-2 (smallest step
    +0.0005), so 0.01 is a small tolerance on a curve that rises by ~0.9."""
    maes = _curve_mae(oracle, tiny_splits["valid"], protocol)
    assert np.all(np.diff(maes) >= -0.01), maes
    assert maes[-1] - maes[0] > 0.5, maes


def test_everything_absent_or_pure_noise_gives_the_prior_median(tiny_splits, oracle):
    split = tiny_splits["valid"]
    batch = _whole(split)
    prior = oracle.prior_median()
    y = torch.sort(tiny_splits["train"].labels).values
    # g(0) with the linear map is its centre; the train median estimates the same thing.
    assert prior == pytest.approx(0.0)
    assert abs(float(y.median()) - prior) < 0.5
    for pair in ((0.0, 1.0), (1.0, 0.0), (1.0, 0.5)):
        point = {m: pair for m in MODALITIES}
        corrupted = apply_point(batch, point, seed=0, stream_key="eval", digest=split.meta.digest)
        pred = oracle.predict(corrupted)
        assert torch.equal(pred, torch.full_like(pred, prior)), pair
        var = oracle.posterior_score(corrupted).var
        torch.testing.assert_close(var, torch.ones_like(var), atol=1e-9, rtol=0)


def test_oracle_prediction_is_per_sample(tiny_splits, oracle):
    """Batch composition, order and padding do not change a sample's prediction."""
    split = tiny_splits["test"]
    full = oracle.predict(_whole(split))
    order = [7, 3, 40, 0]
    torch.testing.assert_close(oracle.predict(split.batch(order)), full[order], atol=1e-6, rtol=0)
    assert full.dtype == torch.float32 and full.shape == (len(split),)
    posterior = oracle.posterior_score(_whole(split))
    median = oracle.label_quantile(posterior, 0.5).to(torch.float32)
    torch.testing.assert_close(median, full, atol=1e-6, rtol=0)
    upper = oracle.label_quantile(posterior, 0.9).to(torch.float32)
    inside = full < split.meta.label_range[1]  # the clipped map is flat at the top
    assert torch.all(upper >= full) and torch.all(upper[inside] > full[inside])


def test_no_trained_model_beats_the_oracle(big):
    """Late fusion, 400 Adam steps (batch 64, L1) on 2000 samples, against the oracle on 2000
    held-out samples, clean and with all modalities at (0.5, 0.5). The oracle is optimal in
    expectation; the tolerance 0.02 covers the sampling noise of the paired difference (its
    standard error is 0.004-0.008 here) should a model ever come close. Observed: model 0.35 vs
    oracle 0.30 clean, 0.54 vs 0.45 at (0.5, 0.5); 1600 steps do not close the gap."""
    _, splits, orc = big
    train, test = _whole(splits["train"]), _whole(splits["test"])
    spec = MODELS["late_fusion"]
    torch.manual_seed(0)
    model = spec.build(spec.config_cls(), dict(splits["train"].meta.dims))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(400):
        data = train.subset(torch.randperm(train.size, generator=order)[:64])
        loss = F.l1_loss(model(data).prediction, data.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    constant = (test.labels - train.labels.median()).abs().mean().item()
    digest = splits["test"].meta.digest
    for point in ({}, {m: (0.5, 0.5) for m in MODALITIES}):
        batch = apply_point(test, point, seed=0, stream_key="eval", digest=digest)
        with torch.no_grad():
            model_mae = (model(batch).prediction - batch.labels).abs().mean().item()
        oracle_mae = (orc.predict(batch) - batch.labels).abs().mean().item()
        assert model_mae >= oracle_mae - 0.02, (point, model_mae, oracle_mae)
        # The model did learn (so the comparison means something).
        assert model_mae < 0.8 * constant, (point, model_mae, constant)


def test_load_needs_the_generator_file(tmp_path, tiny_dataset):
    with pytest.raises(DataError, match=GENERATOR_FILE):
        Oracle.load(tmp_path)
    other = generate("tiny", tmp_path / "other", seed=5)
    # A generator file from other data is refused (digest mismatch), not silently used.
    copy = tmp_path / "mismatch"
    copy.mkdir()
    for name in ("train.parquet", "valid.parquet", "test.parquet"):
        (copy / name).write_bytes((tiny_dataset / name).read_bytes())
    (copy / GENERATOR_FILE).write_bytes((other / GENERATOR_FILE).read_bytes())
    with pytest.raises(DataError, match="digest"):
        Oracle.load(copy)
