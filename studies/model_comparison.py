"""Model comparison: every model on the continuous spectrum, side by side with the oracle.

Trains the late-fusion reference and each model of `compare_models.models` (QA-MoE, QA-MoE
without its quality gate, DERL, ProMMA, MulT) with the same data, training budget, spectrum
sampler and seed; each is selected on its validation spectrum score and evaluated once on test.
The study run gets the comparison table (spectrum-averaged MAE per model and split, its excess
over the Bayes oracle, each curve's mean) as `compare/...` metrics, a Parquet file, an MLflow
table and one figure per curve.

Embedded (local Ray, sqlite MLflow store in this folder):
    python studies/model_comparison.py [--smoke-test] [--set key.path=value ...]
On a cluster (MLflow server named by MLFLOW_TRACKING_URI):
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python studies/model_comparison.py
"""

import sys
from pathlib import Path

import project_path  # noqa: F401  (this checkout's package first on sys.path)
from robustmsa.cli import study_main

if __name__ == "__main__":
    sys.exit(
        study_main(
            None,
            default_config=Path(__file__).parent / "configs" / "model_comparison.yaml",
            description=__doc__.splitlines()[0],
        )
    )
