"""The names a study logs under: the tags, params, metrics and artifact paths of its runs.

Mirrored here rather than imported: their modules (`robustmsa.search.trial`,
`robustmsa.search.study`, `robustmsa.training.loop`, `robustmsa.search.kinds`)
import torch or Ray, which a notebook reading a store does not need;
tests/analysis/test_names.py checks that they agree. The study's and the trial's own tags
are imported instead: `robustmsa.tracking.runs` is light.
"""

from robustmsa.tracking.runs import PARENT_TAG as PARENT_TAG
from robustmsa.tracking.runs import STUDY_TAG as STUDY_TAG
from robustmsa.tracking.runs import TRIAL_TAG as TRIAL_TAG

ROLE_TAG = "robustmsa.role"  # search.trial.ROLE_TAG
OUTCOME_TAG = "robustmsa.outcome"  # completed | pruned | stopped (before its first epoch)
EPOCHS_TAG = "robustmsa.epochs_run"
SELECTED_TAG = "robustmsa.selected_run_id"
REFERENCE_TAG = "robustmsa.reference_run_id"
REFERENCE_ROLE = "reference"  # search.study.REFERENCE_ROLE
OBJECTIVE = "val/spectrum_score"  # training.loop.OBJECTIVE, minimised
SEARCH_METRIC = "best/" + OBJECTIVE  # search.study.SEARCH_METRIC: the trial's score
SPACE_PARAM = "search.space"
KIND_PARAM = "study.kind"
COMPARISON_TABLE = "comparison/models.parquet"  # search.kinds.compare_models
ORACLE_MODEL = "oracle"
COMPLETED, PRUNED = "completed", "pruned"
