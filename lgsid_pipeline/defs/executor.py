"""The executor of the code location's jobs (``LGSID_EXECUTOR``): unset or ``multiprocess``,
Dagster's default; ``in_process``, every step in the run's process (no per-step import of the
code location: tests and debugging); ``k8s``, ``dagster_k8s.k8s_job_executor`` (one pod per
step) configured from the YAML mapping in ``LGSID_K8S_EXECUTOR_CONFIG`` (deploy/helm)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
import yaml

EXECUTOR_ENV = "LGSID_EXECUTOR"
K8S_CONFIG_ENV = "LGSID_K8S_EXECUTOR_CONFIG"
EXECUTORS: tuple[str, ...] = ("multiprocess", "in_process", "k8s")


def k8s_executor_config(text: str | None) -> dict[str, Any]:
    """Parse and validate a k8s_job_executor config (YAML text); ``{}`` when empty."""
    if not text or not text.strip():
        return {}
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{K8S_CONFIG_ENV} is not valid YAML: {exc}") from exc
    if not isinstance(config, Mapping):
        raise ValueError(
            f"{K8S_CONFIG_ENV} must be a YAML mapping of k8s_job_executor config, "
            f"got {type(config).__name__}"
        )
    result = process_config(k8s_job_executor.config_schema.config_type, dict(config))
    if not result.success:
        # The first two lines of each error name the entry (and a missing env var).
        errors = "; ".join(
            " ".join(error.message.splitlines()[:2]) for error in result.errors or []
        )
        raise ValueError(f"{K8S_CONFIG_ENV} is not a valid k8s_job_executor config: {errors}")
    return dict(config)


def pipeline_executor(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The executor for ``dg.Definitions`` (None: Dagster's default multiprocess executor)."""
    environ = os.environ if environ is None else environ
    name = environ.get(EXECUTOR_ENV, "").strip() or "multiprocess"
    if name == "multiprocess":
        return None
    if name == "in_process":
        return dg.in_process_executor
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        config = k8s_executor_config(environ.get(K8S_CONFIG_ENV))
        return k8s_job_executor.configured(config) if config else k8s_job_executor
    raise ValueError(f"unknown {EXECUTOR_ENV}={name!r}; allowed values: {', '.join(EXECUTORS)}")


def light_job_executor(environ: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The executor of a job of light steps (the nightly one): every step in the run's own
    process, so no step pays the code location's import; with ``LGSID_EXECUTOR=k8s`` the
    code location's executor (a pod per step) instead."""
    environ = os.environ if environ is None else environ
    return None if environ.get(EXECUTOR_ENV, "").strip() == "k8s" else dg.in_process_executor
