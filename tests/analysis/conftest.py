"""The logged study every test here reads (`logged_study`)."""

from logged_study import store, study  # noqa: F401  (fixtures)
