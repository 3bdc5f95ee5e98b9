"""Models: the `ModelOutput` contract, the `MODELS` registry and one file per model.

Importing this package registers every model.
"""

from robustmsa.models import derl, late_fusion, mult, promma, qa_moe  # noqa: F401  (registration)
from robustmsa.models.base import MODELS, ModelOutput, ModelSpec, MSAModel

__all__ = ["MODELS", "MSAModel", "ModelOutput", "ModelSpec"]
