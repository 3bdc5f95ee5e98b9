"""Training: the per-worker loop, checkpoints, reporting, and the TorchTrainer driver."""
