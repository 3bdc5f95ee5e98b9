"""Evaluation: sentiment metrics (MMSA definitions) and robustness-curve summaries."""
