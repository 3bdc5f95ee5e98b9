"""DERL hyperparameter search (its loss weights and expert width) over the spectrum.

Embedded (local Ray, sqlite MLflow store in this folder):
    python studies/derl_search.py [--smoke-test] [--set key.path=value ...]
On a cluster (MLflow server named by MLFLOW_TRACKING_URI):
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python studies/derl_search.py --smoke-test
"""

import sys
from pathlib import Path

import project_path  # noqa: F401  (this checkout's package first on sys.path)
from robustmsa.cli import study_main

if __name__ == "__main__":
    sys.exit(
        study_main(
            None,
            default_config=Path(__file__).parent / "configs" / "derl_search.yaml",
            description=__doc__.splitlines()[0],
        )
    )
