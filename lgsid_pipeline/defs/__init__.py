"""Dagster-only code: thin assets, checks and automation over the library."""
