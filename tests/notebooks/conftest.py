"""The smoke studies the notebooks run against: the session fixtures of tests/smoke_studies.py,
the same ones tests/integration uses (each study runs once per session)."""

from __future__ import annotations

from smoke_studies import smoke_comparison, smoke_study

__all__ = ["smoke_comparison", "smoke_study"]
