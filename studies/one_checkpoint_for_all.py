"""One-Checkpoint-for-All: one QA-MoE on the continuous spectrum vs per-rate specialists.

Trains the late-fusion reference, one specialist per missing rate (the per-rate protocol of
TFR-Net / EMT-DLFR) and one QA-MoE on the continuous spectrum, evaluates all of them on the
same validation points and logs the comparison table (with the Bayes oracle) to the study run.

Embedded (local Ray, sqlite MLflow store in this folder):
    python studies/one_checkpoint_for_all.py [--smoke-test] [--set key.path=value ...]
On a cluster (MLflow server named by MLFLOW_TRACKING_URI):
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python studies/one_checkpoint_for_all.py
"""

import sys
from pathlib import Path

import project_path  # noqa: F401  (this checkout's package first on sys.path)
from robustmsa.cli import study_main

if __name__ == "__main__":
    sys.exit(
        study_main(
            None,
            default_config=Path(__file__).parent / "configs" / "one_checkpoint_for_all.yaml",
            description=__doc__.splitlines()[0],
        )
    )
