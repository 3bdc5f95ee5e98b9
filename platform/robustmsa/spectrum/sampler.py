"""The training-time reliability sampler (DESIGN.md §3; LNLN / QA-MoE style).

Per sample and modality: with probability ``p_corrupt`` draw ``λ, η ~ U(0, 1)`` (else the clean
point ``(0, 0)``) and apply the same operators as evaluation (noise, then frame drops); then drop
the whole modality with probability ``p_drop``. Vectorised over the batch with one caller-given
generator: reproducible for a fixed batch, not across batch sizes (evaluation uses
`apply_point` for that).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from robustmsa.data.batch import Batch
from robustmsa.spectrum.operators import mix_noise, unit_interval


class TrainingSampler:
    """Corrupt a training batch; ``clean`` of the result is the input (its own ``clean`` unset).

    ``reliability[m]`` float32 ``(B, 2)`` holds the drawn ``(λ, η)``, with ``η = 1`` where the
    whole modality was dropped and ``(0, 0)`` where a modality was restored. A sample that had at
    least one present modality keeps at least one: if all were dropped, one of its naturally
    present modalities, chosen uniformly, is restored clean.
    """

    def __init__(self, p_corrupt: float, p_drop: float):
        self.p_corrupt = unit_interval("p_corrupt", p_corrupt)
        self.p_drop = unit_interval("p_drop", p_drop)

    def __repr__(self) -> str:
        return f"TrainingSampler(p_corrupt={self.p_corrupt}, p_drop={self.p_drop})"

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        """A new corrupted `Batch`; random numbers come from ``generator`` (on its own device)."""
        b, mods = batch.size, batch.modalities
        gdev = generator.device

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, device=gdev)

        features, masks, present, reliability = {}, {}, {}, {}
        for m in mods:
            x, mask, pres = batch.features[m], batch.masks[m], batch.present[m]
            dev = x.device
            corrupt = (uniform(b) < self.p_corrupt).to(dev)  # (B,)
            zero = torch.zeros(b, device=dev)
            lam = torch.where(corrupt, uniform(b).to(dev), zero)  # (B,)
            eta = torch.where(corrupt, uniform(b).to(dev), zero)  # (B,)
            whole = (uniform(b) < self.p_drop).to(dev)  # (B,)
            valid = mask & pres[:, None]  # (B, T)
            if self.p_corrupt > 0.0:
                eps = torch.randn(x.shape, generator=generator, device=gdev).to(dev)
                noisy = mix_noise(x, eps, lam[:, None, None].to(x.dtype))
                x = torch.where(valid[..., None], noisy, x)
                mask = mask & ~(uniform(*mask.shape).to(dev) < eta[:, None])
            # No frame left after dropping (η > 0) makes the modality absent, as in apply_point.
            new_pres = pres & ~whole & (mask.any(dim=1) | (eta == 0))
            mask = mask & new_pres[:, None]
            features[m] = torch.where(
                mask[..., None], x, torch.zeros((), dtype=x.dtype, device=dev)
            )
            masks[m] = mask
            present[m] = new_pres
            reliability[m] = torch.stack([lam, torch.where(whole, torch.ones_like(eta), eta)], 1)

        if mods:
            natural = torch.stack([batch.present[m] for m in mods], 1)  # (B, M)
            after = torch.stack([present[m] for m in mods], 1)  # (B, M)
            need = natural.any(1) & ~after.any(1)  # (B,)
            scores = uniform(b, len(mods)).to(natural.device)
            choice = torch.where(natural, scores, torch.full_like(scores, -1.0)).argmax(1)
            for j, m in enumerate(mods):
                back = (need & (choice == j)).to(features[m].device)  # (B,)
                features[m] = torch.where(back[:, None, None], batch.features[m], features[m])
                masks[m] = torch.where(back[:, None], batch.masks[m], masks[m])
                present[m] = present[m] | back
                reliability[m] = torch.where(
                    back[:, None], torch.zeros_like(reliability[m]), reliability[m]
                )

        return replace(
            batch,
            features=features,
            masks=masks,
            present=present,
            ids=list(batch.ids),
            clean=replace(batch, clean=None),
            reliability={m: r.to(torch.float32) for m, r in reliability.items()},
        )
