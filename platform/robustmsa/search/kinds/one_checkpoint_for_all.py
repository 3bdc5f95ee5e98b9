"""Study kind ``one_checkpoint_for_all``: QA-MoE's one checkpoint against per-rate specialists.

Section ``one_checkpoint_for_all:`` (the same fields as ``per_rate:``, `PerRateSection`): one
model trained on the study's training spectrum (its ``spectrum.sampler``; QA-MoE's
One-Checkpoint-for-All) beside one specialist per level, all compared on the same validation
points of the ``axis`` curve with the oracle (`robustmsa.search.kinds.per_rate`).
"""

from __future__ import annotations

from robustmsa.search.kinds import per_rate
from robustmsa.search.kinds.base import StudyKind, StudySetup, Variant


def run(setup: StudySetup) -> None:
    variants = [Variant(per_rate.ONE_CHECKPOINT, {}), *per_rate.specialist_variants(setup.config)]
    per_rate.compare(setup, variants)


KIND = StudyKind(
    name="one_checkpoint_for_all",
    section=per_rate.PerRateSection,
    run=run,
    trial_count=lambda config: len(config.kind_section.levels) + 1,
    check=per_rate.check,
    reference="first",
    smoke={"one_checkpoint_for_all.levels": [0.0, 0.5, 1.0]},
    format=per_rate.format_lines,
)
