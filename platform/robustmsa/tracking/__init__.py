"""MLflow tracking: experiments, parent and child runs, batched metric logging, artifacts."""
