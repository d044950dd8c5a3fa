"""Pipeline stages as plain functions: a warehouse in, a small result out. The Dagster assets
in ``defs/`` and the benchmarks in ``bench/`` call the same functions."""
