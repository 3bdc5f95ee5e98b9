"""`robustmsa.analysis.notebook`: what only a notebook's kernel needs."""

from __future__ import annotations

from robustmsa import analysis


def test_short_errors_does_nothing_outside_ipython():
    analysis.short_errors()
