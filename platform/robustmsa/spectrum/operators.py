"""Pure corruption operators: one reliability point ``(λ, η)`` per modality.

Shapes as in `robustmsa.data.batch`: ``features[m]`` float32 ``(B, T, d)``, ``masks[m]`` bool
``(B, T)``, ``present[m]`` bool ``(B,)``; text token ids ``tokens`` int64 ``(B, L)`` with
``token_mask`` bool ``(B, L)``. Each of ``λ`` and ``η`` is a float (the whole batch) or a float
tensor ``(B,)`` (per-sample rates); per sample the operator is that of the float case.

Order (docs/architecture.md §3): noise first, then missingness.

- Features: ``x' = sqrt(1 - λ²) x + λ ε`` on valid frames only, then each valid frame dropped
  independently with probability ``η`` (zeroed, unmasked).
- Token ids (`TokenSpec`, `corrupt_tokens`): each valid non-special token replaced with
  probability ``λ`` by a token drawn uniformly from the non-special vocabulary, then each valid
  non-special token set to ``[UNK]`` with probability ``η``; ``[CLS]``/``[SEP]``/``[PAD]`` are
  never changed (the TFR-Net / EMT-DLFR / LNLN / MMSA ``generate_m`` convention, docs/references.md
  "Intra-modal random missing").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from robustmsa.data.batch import Batch
from robustmsa.spectrum.keys import (
    MISSING_STREAM,
    NOISE_STREAM,
    TOKEN_MISSING_STREAM,
    TOKEN_NOISE_STREAM,
    TOKEN_REPLACE_STREAM,
    stream,
)

# A rate: one float for the whole batch, or a float tensor (B,) of per-sample rates.
Rate = float | torch.Tensor
PointLike = Mapping[str, tuple[Rate, Rate]] | Iterable[tuple[str, tuple[Rate, Rate]]]


def unit_interval(name: str, value: object) -> float:
    """``value`` as a float in ``[0, 1]``, else ValueError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def unit_rate(name: str, value: object, size: int | None = None) -> Rate:
    """``value`` as a float in ``[0, 1]``, or a float tensor ``(size,)`` of per-sample rates in
    ``[0, 1]`` returned as float64 on the CPU (``size`` None: any length); else ValueError
    naming ``name`` and the value."""
    if not isinstance(value, torch.Tensor):
        return unit_interval(name, value)
    want = "(B,)" if size is None else f"({size},)"
    if not value.is_floating_point() or value.dim() != 1:
        raise ValueError(
            f"{name} must be a number or a float tensor of shape {want}, got a {value.dtype} "
            f"tensor of shape {tuple(value.shape)}"
        )
    if size is not None and value.shape[0] != size:
        raise ValueError(
            f"{name} must have shape {want} (one rate per sample), got {tuple(value.shape)}"
        )
    v = value.detach().to("cpu", torch.float64)
    bad = ~((v >= 0.0) & (v <= 1.0))  # also catches NaN
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name} must be in [0, 1], got {v[i].item()} at sample {i}")
    return v


def validate_point(
    point: PointLike, modalities: Iterable[str], size: int | None = None
) -> dict[str, tuple[Rate, Rate]]:
    """``point`` as ``{modality: (λ, η)}`` with names in ``modalities`` and values in [0, 1].

    Each rate is a float, or a float tensor ``(size,)`` of per-sample rates (returned as
    float64 CPU tensors; ``size`` None accepts any 1-D length).
    """
    known = tuple(modalities)
    try:
        items = dict(point)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"point must map modality -> (noise, missing), got {point!r}") from exc
    out: dict[str, tuple[Rate, Rate]] = {}
    for m, pair in items.items():
        if m not in known:
            raise ValueError(f"point modality {m!r} unknown (batch has: {list(known)})")
        try:
            lam, eta = pair
        except (TypeError, ValueError) as exc:
            raise ValueError(f"point[{m!r}] must be a (noise, missing) pair, got {pair!r}") from exc
        out[m] = (
            unit_rate(f"point[{m!r}] noise", lam, size),
            unit_rate(f"point[{m!r}] missing", eta, size),
        )
    return out


def per_sample(rate: Rate, size: int) -> torch.Tensor:
    """A validated rate as float64 CPU ``(size,)``: a float repeated, or the tensor itself."""
    if isinstance(rate, torch.Tensor):
        return rate.detach().to("cpu", torch.float64)
    return torch.full((size,), float(rate), dtype=torch.float64)


def needs_draws(lam: Rate, eta: Rate) -> bool:
    """Whether corrupting at ``(λ, η)`` uses random numbers: some sample is not clean and not
    wholly dropped (``η = 1`` needs none). Callers that `draw` once for a sweep use it to pick
    the modalities to draw."""
    lam_t = torch.as_tensor(lam, dtype=torch.float64)
    eta_t = torch.as_tensor(eta, dtype=torch.float64)
    return bool((((lam_t > 0.0) | (eta_t > 0.0)) & (eta_t < 1.0)).any())


def mix_noise(x: torch.Tensor, eps: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """``sqrt(1 - λ²) x + λ ε``; ``λ`` a float or a tensor broadcastable to ``x``.

    Variance-preserving for standardised ``x``; exactly ``x`` at ``λ = 0`` and ``ε`` at ``λ = 1``.
    """
    if isinstance(lam, torch.Tensor):
        return torch.sqrt(1.0 - lam * lam) * x + lam * eps
    return math.sqrt(1.0 - lam * lam) * x + lam * eps


def _threshold(rate: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Per-sample rates ``(B,)`` as ``(B, 1)`` thresholds in ``dtype`` on ``device``.

    A uniform ``u`` (float32) is "below the rate" when ``u < float32(rate)``: the comparison a
    float32 tensor makes with a Python float, so per-sample and float rates agree bit for bit.
    """
    return rate.to(dtype).to(device)[:, None]


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TokenSpec:
    """The vocabulary the token operators work in.

    ``vocab_size``: ids are ``0 .. vocab_size - 1``; ``pad_id``: the padding id; ``unk_id``:
    what a dropped token becomes; ``special_ids``: ids never changed and never drawn as a
    replacement (must include ``pad_id`` and ``unk_id``). Replacements are uniform over the
    ``vocab_size - len(special_ids)`` other ids.
    """

    vocab_size: int
    pad_id: int
    unk_id: int
    special_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        vocab = _integer("TokenSpec.vocab_size", self.vocab_size)
        if vocab < 2:
            raise ValueError(f"TokenSpec.vocab_size must be at least 2, got {vocab}")

        def in_vocab(name: str, value: object) -> int:
            v = _integer(name, value)
            if not 0 <= v < vocab:
                raise ValueError(f"{name} must be in [0, {vocab}), got {v}")
            return v

        pad = in_vocab("TokenSpec.pad_id", self.pad_id)
        unk = in_vocab("TokenSpec.unk_id", self.unk_id)
        if isinstance(self.special_ids, (str, bytes)) or not isinstance(self.special_ids, Iterable):
            raise ValueError(
                f"TokenSpec.special_ids must be a tuple of ints, got {self.special_ids!r}"
            )
        specials = tuple(in_vocab("TokenSpec.special_ids[]", s) for s in self.special_ids)
        if len(set(specials)) != len(specials):
            raise ValueError(f"TokenSpec.special_ids has duplicates: {specials}")
        for name, v in (("pad_id", pad), ("unk_id", unk)):
            if v not in specials:
                raise ValueError(f"TokenSpec.{name} {v} must be in special_ids {specials}")
        if len(specials) >= vocab:
            raise ValueError(
                f"TokenSpec.special_ids covers the whole vocabulary ({vocab}): nothing to draw"
            )
        object.__setattr__(self, "special_ids", specials)

    @property
    def num_replacements(self) -> int:
        """How many ids a replaced token can become (the non-special vocabulary)."""
        return self.vocab_size - len(self.special_ids)

    def is_special(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bool, same shape as ``tokens``: True at special ids."""
        return torch.isin(tokens, torch.tensor(self.special_ids, device=tokens.device))

    def replacement(self, index: torch.Tensor) -> torch.Tensor:
        """The ``index``-th non-special id (int64, same shape), ``index`` in
        ``[0, num_replacements)``: ``index`` plus the specials at or below the result."""
        # With specials sorted s_0 < s_1 < ..., s_j - j counts the non-special ids below s_j,
        # so the j-th special is skipped exactly when index >= s_j - j.
        s = torch.tensor(sorted(self.special_ids), dtype=torch.int64, device=index.device)
        below = s - torch.arange(len(s), device=index.device)
        return index + torch.searchsorted(below, index, right=True)


# bert-base-uncased, the vocabulary of MMSA's ``text_bert`` ids (docs/references.md "Intra-modal
# text tokens"; a missing token -> [UNK] id 100, [CLS]/[SEP] kept): [PAD] 0, [UNK] 100, [CLS] 101,
# [SEP] 102, [MASK] 103.
BERT_UNCASED = TokenSpec(
    vocab_size=30522, pad_id=0, unk_id=100, special_ids=(0, 100, 101, 102, 103)
)


def corrupt_tokens(
    tokens: torch.Tensor,
    valid: torch.Tensor,
    lam: Rate,
    eta: Rate,
    noise_u: torch.Tensor,
    choice_u: torch.Tensor,
    missing_u: torch.Tensor,
    spec: TokenSpec = BERT_UNCASED,
) -> torch.Tensor:
    """Token ids corrupted at per-sample ``(λ, η)``; a new int64 ``(B, L)`` tensor.

    ``tokens`` int64 ``(B, L)``; ``valid`` bool ``(B, L)``: the tokens that may change
    (``token_mask & present[:, None]``); ``lam``, ``eta``: floats or tensors ``(B,)`` in
    ``[0, 1]``; ``noise_u``, ``choice_u``, ``missing_u``: uniforms in ``[0, 1)`` of shape
    ``(B, L)`` (their values at invalid positions are ignored; ``choice_u`` should be float64,
    whose 53 bits keep the choice among ~30k ids uniform). A valid non-special token is replaced
    by the ``floor(choice_u · K)``-th non-special id when ``noise_u < λ``, then becomes
    ``unk_id`` when ``missing_u < η``; special ids never change. Uniforms shared across calls
    give nested results: what changes at a rate also changes at every higher one.
    """
    shape = tuple(tokens.shape)
    for name, t in (
        ("valid", valid),
        ("noise_u", noise_u),
        ("choice_u", choice_u),
        ("missing_u", missing_u),
    ):
        if tuple(t.shape) != shape or len(shape) != 2:
            raise ValueError(
                f"corrupt_tokens {name} must have the (B, L) shape {shape} of "
                f"tokens, got {tuple(t.shape)}"
            )
    b = tokens.shape[0]
    dev = tokens.device
    lam_t = per_sample(unit_rate("corrupt_tokens lam", lam, b), b)
    eta_t = per_sample(unit_rate("corrupt_tokens eta", eta, b), b)
    changeable = valid & ~spec.is_special(tokens)
    replaced = changeable & (noise_u < _threshold(lam_t, noise_u.dtype, dev))
    k = spec.num_replacements
    # u < 1, but u * k may still round up to k in floating point.
    index = (choice_u.to(torch.float64) * k).long().clamp_(0, k - 1)
    out = torch.where(replaced, spec.replacement(index), tokens)
    dropped = changeable & (missing_u < _threshold(eta_t, missing_u.dtype, dev))
    return torch.where(dropped, torch.full_like(out, spec.unk_id), out)


@dataclass
class Draws:
    """The random numbers of one batch, shared by every point of a sweep.

    Per modality ``m`` with ``N_m`` valid frames (row-major (sample, frame) order of
    ``mask & present``): ``eps[m]`` float32 ``(N_m, d_m)`` standard normals and ``uniform[m]``
    float32 ``(N_m,)`` in ``[0, 1)``. A frame is dropped at missing rate ``η`` when its uniform
    is below ``η``, so the points of a curve use common random numbers: the frames dropped at
    ``η = 0.3`` are a subset of those dropped at ``η = 0.5``, and the noise direction ``ε`` is the
    same at every ``λ``. Curves are therefore smooth in the level and paired across models.

    Token ids (only when the batch has them and text was drawn), per valid token (row-major
    order of ``token_mask & present["text"]``, ``N_tok`` in all, special tokens included so the
    count depends on the sample alone): ``token_noise`` float32 ``(N_tok,)`` (replaced when
    below ``λ``), ``token_choice`` float64 ``(N_tok,)`` (which replacement) and
    ``token_missing`` float32 ``(N_tok,)`` (``[UNK]`` when below ``η``); else None.

    The same per-frame draws in the batch's padded layout, which `apply_point` corrupts with
    (dense arithmetic on ``(B, T, d)``, no gather or scatter per point): ``eps_padded[m]``
    float32 ``(B, T_m, d_m)`` and ``uniform_padded[m]`` float32 ``(B, T_m)``, the values of
    ``eps[m]`` / ``uniform[m]`` at the valid frames and zeros elsewhere. `draw` fills them;
    when a modality lacks them (hand-made `Draws`), `apply_point` builds them from ``eps`` and
    ``uniform`` for each call.
    """

    eps: dict[str, torch.Tensor] = field(default_factory=dict)
    uniform: dict[str, torch.Tensor] = field(default_factory=dict)
    token_noise: torch.Tensor | None = None
    token_choice: torch.Tensor | None = None
    token_missing: torch.Tensor | None = None
    eps_padded: dict[str, torch.Tensor] = field(default_factory=dict)
    uniform_padded: dict[str, torch.Tensor] = field(default_factory=dict)


def _valid_tokens(batch: Batch) -> torch.Tensor:
    """Bool ``(B, L)``: real tokens of samples whose text is present."""
    return batch.token_mask & batch.present["text"][:, None]


def _padded(
    eps: torch.Tensor, uniform: torch.Tensor, valid: torch.Tensor, d: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The draws ``eps`` ``(N, d)`` and ``uniform`` ``(N,)`` of the ``N`` valid frames of
    ``valid`` ``(B, T)`` in padded layout, on ``valid``'s device: ``(B, T, d)`` and ``(B, T)``,
    zeros at invalid positions."""
    eps_padded = torch.zeros((*valid.shape, d), dtype=eps.dtype, device=valid.device)
    eps_padded[valid] = eps.to(valid.device)
    uniform_padded = torch.zeros(valid.shape, dtype=uniform.dtype, device=valid.device)
    uniform_padded[valid] = uniform.to(valid.device)
    return eps_padded, uniform_padded


def draw(
    batch: Batch, modalities: Iterable[str], *, seed: int, stream_key: str, digest: str
) -> Draws:
    """CPU draws for the valid frames (and text tokens) of ``modalities`` of ``batch``.

    Sample ``i`` draws ``(n_i, d)`` normals and ``n_i`` uniforms for its ``n_i`` valid frames
    from streams keyed by ``(digest, ids[i], stream_key, seed, modality)``, so padding length,
    batch composition, order, worker and device do not matter. When ``batch.tokens`` is set and
    ``"text"`` is in ``modalities``, it also draws three uniforms per valid token from the
    ``TOKEN_*`` streams of ``"text"``.
    """
    out = Draws()
    modalities = tuple(modalities)
    for m in modalities:
        valid = (batch.masks[m] & batch.present[m][:, None]).cpu()
        d = batch.features[m].shape[-1]
        counts = valid.sum(dim=1).tolist()
        noise: list[np.ndarray] = [np.zeros((0, d), np.float32)]
        uniform: list[np.ndarray] = [np.zeros(0, np.float32)]
        for sid, n in zip(batch.ids, counts, strict=True):
            if n == 0:
                continue
            noise.append(
                stream(digest, sid, stream_key, seed, m, NOISE_STREAM).standard_normal(
                    (n, d), dtype=np.float32
                )
            )
            uniform.append(
                stream(digest, sid, stream_key, seed, m, MISSING_STREAM).random(n, dtype=np.float32)
            )
        out.eps[m] = torch.from_numpy(np.concatenate(noise))
        out.uniform[m] = torch.from_numpy(np.concatenate(uniform))
        out.eps_padded[m], out.uniform_padded[m] = _padded(out.eps[m], out.uniform[m], valid, d)
    if batch.tokens is not None and "text" in modalities:
        counts = _valid_tokens(batch).sum(dim=1).tolist()
        parts: dict[str, list[np.ndarray]] = {
            TOKEN_NOISE_STREAM: [np.zeros(0, np.float32)],
            TOKEN_REPLACE_STREAM: [np.zeros(0, np.float64)],
            TOKEN_MISSING_STREAM: [np.zeros(0, np.float32)],
        }
        for sid, n in zip(batch.ids, counts, strict=True):
            if n == 0:
                continue
            for name, chunks in parts.items():
                dtype = chunks[0].dtype
                chunks.append(stream(digest, sid, stream_key, seed, "text", name).random(n, dtype))
        out.token_noise = torch.from_numpy(np.concatenate(parts[TOKEN_NOISE_STREAM]))
        out.token_choice = torch.from_numpy(np.concatenate(parts[TOKEN_REPLACE_STREAM]))
        out.token_missing = torch.from_numpy(np.concatenate(parts[TOKEN_MISSING_STREAM]))
    return out


def _corrupt_features(
    x: torch.Tensor,
    mask: torch.Tensor,
    pres: torch.Tensor,
    lam: torch.Tensor,
    eta: torch.Tensor,
    eps: torch.Tensor | None,
    uniform: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One feature modality at per-sample ``lam``, ``eta`` (float64 CPU ``(B,)``, not all
    clean): new ``(features (B, T, d), mask (B, T), present (B,))``. ``eps`` ``(B, T, d)`` and
    ``uniform`` ``(B, T)`` are the draws in padded layout on ``x``'s device (`Draws.eps_padded`,
    `Draws.uniform_padded`; None when `needs_draws` is False).

    Dense arithmetic on the padded tensors: every frame is computed, and the frames that are
    not kept (padding, dropped, absent) are zeroed at the end, so valid frames get exactly the
    float32 operations of `mix_noise` (``round(k x) + round(λ ε)``, bit for bit)."""
    dev = x.device
    if bool((eta >= 1.0).all()):  # every frame dropped: absent, nothing to draw
        return torch.zeros_like(x), torch.zeros_like(mask), torch.zeros_like(pres)
    # Samples at η = 1 lose every frame whatever the draws: made absent below, with neither
    # noise nor drop draws, so a batch of clean and η = 1 samples needs no draws at all.
    gone = eta >= 1.0  # (B,)
    lam = torch.where(gone, 0.0, lam)
    eta_drawn = torch.where(gone, 0.0, eta)
    if bool((eta_drawn > 0.0).any()):
        valid = mask & pres[:, None]  # (B, T)
        mask = mask & ~(valid & (uniform < _threshold(eta_drawn, uniform.dtype, dev)))
    # A present sample whose frames were all dropped (η > 0) is absent; natural ones stay so.
    new_pres = pres & ~gone.to(dev) & (mask.any(dim=1) | (eta.to(dev) == 0.0))
    mask = mask & new_pres[:, None]
    if not bool((lam > 0.0).any()):
        features = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=dev))
        return features, mask, new_pres
    # Coefficients in float64, rounded once to x's dtype: bit for bit the float32 scalars that
    # `mix_noise` multiplies by for a float λ. Two products and a sum, each rounded, as in
    # `mix_noise`: never a fused multiply-add (addcmul, add with alpha), which may skip one.
    keep = torch.sqrt(1.0 - lam * lam).to(x.dtype).to(dev)[:, None, None]
    mix = lam.to(x.dtype).to(dev)[:, None, None]
    features = x * keep
    features += eps * mix
    return features.masked_fill_(~mask[..., None], 0.0), mask, new_pres


def _apply_tokens(
    batch: Batch, lam: torch.Tensor, eta: torch.Tensor, draws: Draws, spec: TokenSpec
) -> torch.Tensor:
    """``batch.tokens`` corrupted at per-sample ``lam``, ``eta`` (float64 CPU ``(B,)``)."""
    tokens = batch.tokens
    valid = _valid_tokens(batch)
    ids = tokens[valid]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= spec.vocab_size):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"batch.tokens holds id {bad} outside [0, {spec.vocab_size}) of {spec}")
    if not needs_draws(lam, eta):
        # Every sample is clean (unchanged) or at η = 1 (every non-special token [UNK]) whatever
        # the draws: zero uniforms are below every positive rate, and noise before a certain
        # drop does not matter.
        zeros = torch.zeros(tokens.shape, device=tokens.device)
        lam = torch.zeros_like(lam)
        return corrupt_tokens(tokens, valid, lam, eta, zeros, zeros, zeros, spec)
    n = int(valid.sum())
    if draws.token_noise is None or draws.token_noise.shape[0] != n:
        raise ValueError("draws for the text tokens do not match this batch's valid tokens")

    def spread(values: torch.Tensor) -> torch.Tensor:
        # (N,) draws of the valid tokens into (B, L); 1.0 elsewhere, which is below no rate.
        full = torch.ones(tokens.shape, dtype=values.dtype, device=tokens.device)
        full[valid] = values.to(tokens.device)
        return full

    return corrupt_tokens(
        tokens,
        valid,
        lam,
        eta,
        spread(draws.token_noise),
        spread(draws.token_choice),
        spread(draws.token_missing),
        spec,
    )


def _padded_draws(batch: Batch, m: str, draws: Draws) -> tuple[torch.Tensor, torch.Tensor]:
    """The draws of modality ``m`` in padded layout on its features' device, checked against
    ``batch``: `Draws.eps_padded` / `Draws.uniform_padded` when set, else built from
    `Draws.eps` / `Draws.uniform`."""
    x = batch.features[m]
    valid = batch.masks[m] & batch.present[m][:, None]
    n = int(valid.sum())
    eps, uniform = draws.eps.get(m), draws.uniform.get(m)
    if eps is None or uniform is None or eps.shape != (n, x.shape[-1]) or uniform.shape != (n,):
        raise ValueError(f"draws for {m!r} do not match this batch's valid frames")
    eps_padded, uniform_padded = draws.eps_padded.get(m), draws.uniform_padded.get(m)
    if eps_padded is None or uniform_padded is None:
        return _padded(eps, uniform, valid, x.shape[-1])
    if eps_padded.shape != x.shape or uniform_padded.shape != valid.shape:
        raise ValueError(
            f"padded draws for {m!r} have shapes {tuple(eps_padded.shape)} and "
            f"{tuple(uniform_padded.shape)}, not this batch's {tuple(x.shape)} and "
            f"{tuple(valid.shape)}"
        )
    return eps_padded.to(x.device), uniform_padded.to(x.device)


def apply_point(
    batch: Batch,
    point: PointLike,
    *,
    seed: int,
    stream_key: str,
    digest: str,
    draws: Draws | None = None,
    tokens: TokenSpec = BERT_UNCASED,
) -> Batch:
    """``batch`` corrupted at the reliability ``point``; a new `Batch`, the input is untouched.

    ``point`` maps modality -> ``(noise λ, missing η)`` (a dict or pairs, e.g.
    ``EvalPoint.point``); each rate is a float in ``[0, 1]`` or a float tensor ``(B,)`` of
    per-sample rates in ``[0, 1]``. Modalities not in it stay clean. Per sample and modality:
    noise on valid frames, then each valid frame dropped with probability ``η``; at ``η = 1``,
    or when no valid frame is left after dropping, the modality becomes absent (``present``
    False, all-False mask, zero features). Naturally absent modalities stay absent. Unchanged
    tensors are shared with the input, never written to.

    Text token ids (``batch.tokens``, when set) get the token operators of ``tokens`` (see
    `corrupt_tokens`) at the text point; ``token_mask`` is never changed. At ``η = 1`` every
    non-special token is ``[UNK]`` (the TFR-Net / EMT-DLFR rate-1.0 input) and ``present
    ["text"]`` is False, so token models see a well-formed sequence and must honour ``present``.

    The random numbers of sample ``i`` depend only on ``(digest, ids[i], stream_key, seed,
    modality)`` (see `Draws`); pass ``draws`` from `draw` to reuse them across the points of a
    sweep. Returns ``reliability[m]`` float32 ``(B, 2)``: the nominal ``(λ_i, η_i)`` of each
    sample for each modality in ``point`` (absent or not); other modalities keep the input's
    reliability or get zeros. ``clean`` is carried over from the input.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    for name, value in (("stream_key", stream_key), ("digest", digest)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a str, got {value!r}")
    if not isinstance(tokens, TokenSpec):
        raise ValueError(f"tokens must be a TokenSpec, got {tokens!r}")
    if len(batch.ids) != batch.size:
        raise ValueError(f"batch has {len(batch.ids)} ids for {batch.size} samples")
    rates = {
        m: (per_sample(lam, batch.size), per_sample(eta, batch.size))
        for m, (lam, eta) in validate_point(point, batch.modalities, batch.size).items()
    }
    if draws is None:
        needed = [m for m, (lam, eta) in rates.items() if needs_draws(lam, eta)]
        draws = draw(batch, needed, seed=seed, stream_key=stream_key, digest=digest)

    features, masks, present = dict(batch.features), dict(batch.masks), dict(batch.present)
    reliability: dict[str, torch.Tensor] = {}
    for m in batch.modalities:
        old = batch.reliability.get(m)
        reliability[m] = (
            old.clone() if old is not None else torch.zeros((batch.size, 2), dtype=torch.float32)
        )
    new_tokens = batch.tokens
    for m, (lam, eta) in rates.items():
        dev = batch.features[m].device
        reliability[m] = torch.stack([lam, eta], dim=1).to(torch.float32).to(dev)
        if not bool((lam > 0.0).any() | (eta > 0.0).any()):
            continue  # clean: share the input's tensors
        eps, uniform = _padded_draws(batch, m, draws) if needs_draws(lam, eta) else (None, None)
        features[m], masks[m], present[m] = _corrupt_features(
            batch.features[m], batch.masks[m], batch.present[m], lam, eta, eps, uniform
        )
        if m == "text" and batch.tokens is not None:
            new_tokens = _apply_tokens(batch, lam, eta, draws, tokens)
    return replace(
        batch,
        features=features,
        masks=masks,
        present=present,
        labels=batch.labels,
        ids=list(batch.ids),
        clean=batch.clean,
        reliability=reliability,
        tokens=new_tokens,
        token_mask=batch.token_mask,
    )
