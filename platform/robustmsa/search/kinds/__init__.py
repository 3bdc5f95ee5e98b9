"""The study kinds: one registry, one line per kind (`robustmsa.search.kinds.base.StudyKind`)."""

from robustmsa.search.kinds import compare_models, confirm, one_checkpoint_for_all, per_rate, search
from robustmsa.search.kinds.base import StudyKind

KINDS: dict[str, StudyKind] = {
    search.KIND.name: search.KIND,
    per_rate.KIND.name: per_rate.KIND,
    one_checkpoint_for_all.KIND.name: one_checkpoint_for_all.KIND,
    compare_models.KIND.name: compare_models.KIND,
    confirm.KIND.name: confirm.KIND,
}
