"""How many torch threads a compute step may use, so that threads x concurrent steps never
exceeds the cores: the cores this process may run on, shared by the compute steps that hold
the ``compute`` pool's slots now. A step starts with the cores divided by the pool's limit
(the most compute steps that run at once); one that works in batches re-checks the running
steps between them, so encoding alone uses every core and gives half back when a second step
starts. No config is needed; ``WorkspaceResource.torch_threads`` overrides it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
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


def step_threads(
    override: int, pool: str, pool_limit: int | None, running_steps: int | None = None
) -> tuple[int, str]:
    """A compute step's threads and why: ``override`` when positive; else the available
    cores shared by the ``running_steps`` that hold the pool's slots now (this one included,
    capped by ``pool_limit``) when known; else shared by the ``pool_limit`` steps the pool
    lets run at once."""
    if override > 0:
        return override, "torch_threads"
    cores = available_cores()
    if running_steps is not None and running_steps >= 1:
        sharing = min(running_steps, pool_limit) if pool_limit else running_steps
        return threads_per_step(cores, sharing), f"{cores} cores / {sharing} running {pool} steps"
    if pool_limit:
        return threads_per_step(
            cores, pool_limit
        ), f"{cores} cores / {pool} pool limit {pool_limit}"
    return threads_per_step(cores, None), f"{cores} cores, no {pool} pool limit"


class ThreadRebalancer:
    """Call between batches of a long computation: re-sets torch's threads to what
    ``threads_now`` says (e.g. ``step_threads`` over the steps running now), asking at most
    once every ``every_s`` seconds, and reports each change to ``log``."""

    def __init__(
        self,
        threads_now: Callable[[], tuple[int, str]],
        log: Callable[[str], None] | None = None,
        every_s: float = 1.0,
        threads: int = 0,
    ) -> None:
        self.threads_now = threads_now
        self.log = log
        self.every_s = every_s
        self.threads = threads  # what torch was set to (0: unknown)
        self._asked = float("-inf")

    def __call__(self) -> int:
        """The threads now (set in torch when they changed)."""
        now = time.monotonic()
        if now - self._asked < self.every_s:
            return self.threads
        self._asked = now
        threads, why = self.threads_now()
        if threads != self.threads:
            set_torch_threads(threads)
            if self.log is not None:
                self.log(f"torch threads: {threads} ({why})")
            self.threads = threads
        return threads


def set_torch_threads(threads: int) -> None:
    """Set torch's intra-op threads (torch is imported here, by the step that computes)."""
    import torch

    torch.set_num_threads(threads)
