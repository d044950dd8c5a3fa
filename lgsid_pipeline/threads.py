"""How many torch threads a compute step may use, so that threads x concurrent steps never
exceeds the cores: the cores this process may run on, shared by as many compute steps as the
``compute`` pool lets run at once (its limit in the Dagster instance). No config is needed;
``WorkspaceResource.torch_threads`` overrides it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(
    cpu_max: Path = CGROUP_CPU_MAX, environ: Mapping[str, str] | None = None
) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container's limit) and by ``OMP_NUM_THREADS`` when set (what whoever started the process
    gave it, e.g. one test worker of several), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    given = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        cores = min(cores, int(given))
    return max(1, cores)


def threads_per_step(cores: int, concurrent_steps: int | None) -> int:
    """Threads for one of ``concurrent_steps`` steps sharing ``cores`` (None: unbounded by a
    pool, so every core)."""
    if concurrent_steps is None or concurrent_steps < 1:
        return max(1, cores)
    return max(1, cores // concurrent_steps)


def step_threads(override: int, pool: str, pool_limit: int | None) -> tuple[int, str]:
    """A compute step's threads and why: ``override`` when positive, else the available
    cores shared by the ``pool_limit`` steps the pool lets run at once."""
    if override > 0:
        return override, "torch_threads"
    cores = available_cores()
    if pool_limit:
        return threads_per_step(
            cores, pool_limit
        ), f"{cores} cores / {pool} pool limit {pool_limit}"
    return threads_per_step(cores, None), f"{cores} cores, no {pool} pool limit"


def set_torch_threads(threads: int) -> None:
    """Set torch's intra-op threads (torch is imported here, by the step that computes)."""
    import torch

    torch.set_num_threads(threads)
