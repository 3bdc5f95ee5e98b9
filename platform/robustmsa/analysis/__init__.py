"""A finished study read back from MLflow, for the notebooks in ``notebooks/`` (and anyone else).

Everything here reads through MLflow's client API and the project's public functions; nothing
is written (figures are returned unsaved, artifacts are read from temporary folders). What a
study logged, and where (`robustmsa.search.study`, `robustmsa.search.kinds.compare_models`):

- the study's *parent run* (tag ``robustmsa.study``, no ``mlflow.parentRunId``): the flattened
  study config as params (``search.space`` holds the searched space), the selected trial's,
  the reference's and the oracle's validation spectrum scores, the oracle's spectrum tables
  ``spectrum/oracle_<split>.parquet``, and for ``compare_models`` the comparison table
  ``comparison/models.parquet`` with its figures;
- one *child run* per trial (tag ``robustmsa.trial_id``; ``robustmsa.outcome`` completed,
  pruned, or stopped by a trial-epoch budget before its first epoch; ``robustmsa.role`` for the
  reference model and the models of a comparison): the trial's params, per-epoch metrics
  (step = epoch) and its spectrum tables.

Use the names re-exported here (``from robustmsa import analysis``, then ``analysis.find_study``
...); they live in one module per job:

- `names`: the tags, params, metrics and artifact paths a study logs under (``STUDY_TAG``,
  ``ROLE_TAG``, ``OBJECTIVE``, ``SEARCH_METRIC`` ...), copied rather than imported from the
  modules that log them, which import torch or Ray;
- `studies`, the store and the study: `open_client` (never creates a store), `sqlite_path`,
  `find_study`, `is_study_run`, `study_runs`, `study_kind`, `search_space`,
  `selected_run_id`, `reference_run_id`, `study_scores`;
- `trials`, the trials as pandas frames: `trials_frame`, `score_history`, `outcome_summary`
  (columns `TRIAL_COLUMNS`, `HISTORY_COLUMNS`);
- `spectra`, spectrum rows (lists of dicts, `robustmsa.evaluation.spectrum`'s long form):
  `run_spectrum`, `trial_tables`, `role_tables`, `study_oracle`, `study_floor`, `excess_rows`; and
  `curve_summary`, their curves' means as a pandas frame;
- `comparison`: `model_comparison_table`, a ``compare_models`` study's table (pandas);
- `images`: `logged_images` reads the PNG figures a run logged;
- `optuna_rebuild`: `optuna_study` rebuilds an in-memory Optuna study from the trials (the
  product does not persist one), `param_importances` (`Importances`), `distributions`;
- `figures`, drawing (matplotlib `Figure` objects, no pyplot): `spectrum_curves_figure`,
  `heatmap_figures`, `score_history_figure`, `param_effects_figure`, `importance_figure`,
  `oracle_gap_figure`; `curve_protocols` says which curves a table holds;
- `notebook`: `short_errors` makes a notebook show a `RobustMSAError` as its one-line message.

Importing this package imports neither torch nor Ray; the functions that read spectrum tables,
or look a run up by its id, import `robustmsa.evaluation.report` (which imports torch) when
first called.
"""

from robustmsa.analysis.comparison import model_comparison_table
from robustmsa.analysis.figures import (
    curve_protocols,
    heatmap_figures,
    importance_figure,
    oracle_gap_figure,
    param_effects_figure,
    score_history_figure,
    spectrum_curves_figure,
)
from robustmsa.analysis.images import logged_images
from robustmsa.analysis.names import (
    COMPARISON_TABLE,
    COMPLETED,
    EPOCHS_TAG,
    KIND_PARAM,
    OBJECTIVE,
    ORACLE_MODEL,
    OUTCOME_TAG,
    PARENT_TAG,
    PRUNED,
    REFERENCE_ROLE,
    REFERENCE_TAG,
    ROLE_TAG,
    SEARCH_METRIC,
    SELECTED_TAG,
    SPACE_PARAM,
    STUDY_TAG,
    TRIAL_TAG,
)
from robustmsa.analysis.notebook import short_errors
from robustmsa.analysis.optuna_rebuild import (
    Importances,
    distributions,
    optuna_study,
    param_importances,
)
from robustmsa.analysis.spectra import (
    curve_summary,
    excess_rows,
    role_tables,
    run_spectrum,
    study_floor,
    study_oracle,
    trial_tables,
)
from robustmsa.analysis.studies import (
    MAX_RUNS,
    find_study,
    is_study_run,
    open_client,
    reference_run_id,
    search_space,
    selected_run_id,
    sqlite_path,
    study_kind,
    study_runs,
    study_scores,
)
from robustmsa.analysis.trials import (
    HISTORY_COLUMNS,
    TRIAL_COLUMNS,
    outcome_summary,
    score_history,
    trials_frame,
)

__all__ = [
    "COMPARISON_TABLE",
    "COMPLETED",
    "EPOCHS_TAG",
    "HISTORY_COLUMNS",
    "KIND_PARAM",
    "MAX_RUNS",
    "OBJECTIVE",
    "ORACLE_MODEL",
    "OUTCOME_TAG",
    "PARENT_TAG",
    "PRUNED",
    "REFERENCE_ROLE",
    "REFERENCE_TAG",
    "ROLE_TAG",
    "SEARCH_METRIC",
    "SELECTED_TAG",
    "SPACE_PARAM",
    "STUDY_TAG",
    "TRIAL_COLUMNS",
    "TRIAL_TAG",
    "Importances",
    "curve_protocols",
    "curve_summary",
    "distributions",
    "excess_rows",
    "find_study",
    "heatmap_figures",
    "importance_figure",
    "is_study_run",
    "logged_images",
    "model_comparison_table",
    "open_client",
    "optuna_study",
    "oracle_gap_figure",
    "outcome_summary",
    "param_effects_figure",
    "param_importances",
    "reference_run_id",
    "role_tables",
    "run_spectrum",
    "score_history",
    "score_history_figure",
    "search_space",
    "selected_run_id",
    "short_errors",
    "spectrum_curves_figure",
    "sqlite_path",
    "study_floor",
    "study_kind",
    "study_oracle",
    "study_runs",
    "study_scores",
    "trial_tables",
    "trials_frame",
]
