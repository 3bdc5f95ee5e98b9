"""robustmsa: hyperparameter and robustness studies of robust multimodal sentiment analysis.

Data flows one way: data -> spectrum -> models -> training -> evaluation -> tracking -> search.
`data`, `spectrum`, `models` and `evaluation.metrics` import neither ray nor mlflow.
"""

__version__ = "0.1.0"
