"""Torch threads per compute step add up to the cores: cores / compute pool limit, and for a
step that re-balances between batches, cores / the compute steps running now."""

from pathlib import Path

import dagster as dg
import pytest

from lgsid_pipeline.catalog import COMPUTE_POOL
from lgsid_pipeline.defs.resources import WorkspaceResource, compute_pool_limit
from lgsid_pipeline.threads import (
    ThreadRebalancer,
    available_cores,
    step_threads,
    threads_per_step,
)


@pytest.mark.parametrize(
    ("cores", "steps", "threads"),
    [(2, 2, 1), (8, 2, 4), (8, 3, 2), (2, 4, 1), (16, 1, 16), (4, None, 4), (4, 0, 4)],
)
def test_threads_times_concurrent_steps_fit_the_cores(
    cores: int, steps: int | None, threads: int
) -> None:
    assert threads_per_step(cores, steps) == threads
    if steps:
        assert threads_per_step(cores, steps) * min(steps, cores) <= cores


def test_cgroup_quota_caps_the_cores(tmp_path: Path) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # one core
    assert available_cores(quota) == 1
    quota.write_text("max 100000\n")
    assert available_cores(quota) == available_cores(tmp_path / "missing")
    quota.write_text("garbage")
    assert available_cores(quota) >= 1


def test_omp_num_threads_caps_the_cores(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    uncapped = available_cores(missing, {})
    assert available_cores(missing, {"OMP_NUM_THREADS": "1"}) == 1
    assert available_cores(missing, {"OMP_NUM_THREADS": "512"}) == uncapped
    for ignored in ("", "0", "two", "-1"):
        assert available_cores(missing, {"OMP_NUM_THREADS": ignored}) == uncapped


def _threads_of_a_compute_step(instance: dg.DagsterInstance, workspace: WorkspaceResource) -> dict:
    @dg.asset(pool=COMPUTE_POOL)
    def compute_step(
        context: dg.AssetExecutionContext, workspace: WorkspaceResource
    ) -> dg.MaterializeResult:
        import torch

        set_to = workspace.limit_threads(context)
        return dg.MaterializeResult(metadata={"set": set_to, "torch": torch.get_num_threads()})

    result = dg.materialize([compute_step], instance=instance, resources={"workspace": workspace})
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_compute_steps_share_the_cores_by_the_pool_limit(tmp_path: Path) -> None:
    workspace = WorkspaceResource(home=str(tmp_path / "home"))
    cores = available_cores()
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 2}}}) as inst:
        assert compute_pool_limit(inst) == 2
        assert _threads_of_a_compute_step(inst, workspace) == {
            "set": max(1, cores // 2),
            "torch": max(1, cores // 2),
        }
        inst.event_log_storage.set_concurrency_slots(COMPUTE_POOL, 1)
        assert compute_pool_limit(inst) == 1
        assert _threads_of_a_compute_step(inst, workspace)["torch"] == cores
    with dg.instance_for_test() as inst:  # no pool limit: nothing shares the cores
        assert compute_pool_limit(inst) is None
        assert _threads_of_a_compute_step(inst, workspace)["torch"] == cores
        # an explicit setting wins
        fixed = WorkspaceResource(home=str(tmp_path / "home"), torch_threads=3)
        assert _threads_of_a_compute_step(inst, fixed) == {"set": 3, "torch": 3}


def test_in_process_stages_share_the_cores_by_the_runs_at_once() -> None:
    from lgsid_pipeline.runner import with_step_threads
    from lgsid_pipeline.threads import available_cores

    cores, in_process = available_cores(), {"LGSID_EXECUTOR": "in_process"}

    def threads(config: dict | None) -> int:
        return config["resources"]["workspace"]["config"]["torch_threads"]

    base = {"ops": {"din": {"config": {"epochs": 1}}}}
    alone = with_step_threads(base, 1, in_process)
    assert threads(alone) == cores and alone["ops"] == base["ops"]
    assert threads(with_step_threads(None, 2, in_process)) == max(1, cores // 2)
    assert "resources" not in base  # the caller's config is not changed
    # threads the run config sets itself win; other executors leave it to the pool limit
    own = {"resources": {"workspace": {"config": {"torch_threads": 3}}}}
    assert with_step_threads(own, 2, in_process) == own
    assert with_step_threads(base, 1, {"LGSID_EXECUTOR": "multiprocess"}) is base
    assert with_step_threads(base, 1, {}) is base


def test_running_steps_share_the_cores_up_to_the_pool_limit() -> None:
    cores = available_cores()
    assert step_threads(0, "compute", 2, 1)[0] == cores  # alone: every core
    assert step_threads(0, "compute", 2, 2)[0] == max(1, cores // 2)
    assert step_threads(0, "compute", 2, 5)[0] == max(1, cores // 2)  # never below the limit's
    assert step_threads(0, "compute", 2, 0)[0] == max(1, cores // 2)  # unknown: the limit's
    assert step_threads(3, "compute", 2, 1) == (3, "torch_threads")


def test_rebalancer_asks_at_most_once_per_interval_and_sets_torch() -> None:
    import torch

    before = torch.get_num_threads()
    answers, logged = [(1, "two running"), (2, "alone")], []
    rebalance = ThreadRebalancer(lambda: answers[0], logged.append, every_s=3600, threads=1)
    try:
        assert rebalance() == 1 and logged == []  # unchanged: nothing set or logged
        answers.pop(0)
        assert rebalance() == 1  # asked within the interval: the last answer stands
        rebalance.every_s = 0
        assert rebalance() == 2 and torch.get_num_threads() == 2
        assert logged == ["torch threads: 2 (alone)"]
    finally:
        torch.set_num_threads(before)


def _rebalanced_threads(instance: dg.DagsterInstance, workspace: WorkspaceResource) -> dict:
    """Threads a batching compute step gets alone, then with a step of another run holding
    a compute slot, then alone again."""

    @dg.asset(pool=COMPUTE_POOL)
    def batching_step(
        context: dg.AssetExecutionContext, workspace: WorkspaceResource
    ) -> dg.MaterializeResult:
        storage = context.instance.event_log_storage
        rebalance = workspace.thread_rebalancer(context, workspace.limit_threads(context))
        rebalance.every_s = 0
        seen = {"alone": rebalance()}
        storage.claim_concurrency_slot(COMPUTE_POOL, "another-run", "another_step")
        seen["shared"] = rebalance()
        storage.free_concurrency_slot_for_step("another-run", "another_step")
        seen["alone_again"] = rebalance()
        return dg.MaterializeResult(metadata=seen)

    result = dg.materialize([batching_step], instance=instance, resources={"workspace": workspace})
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_batching_step_gives_cores_back_when_another_compute_step_starts(
    tmp_path: Path,
) -> None:
    cores = available_cores()
    workspace = WorkspaceResource(home=str(tmp_path / "home"))
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 2}}}) as inst:
        seen = _rebalanced_threads(inst, workspace)
    half = max(1, cores // 2)
    assert seen == {"alone": cores, "shared": half, "alone_again": cores}
    fixed = WorkspaceResource(home=str(tmp_path / "home"), torch_threads=1)
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 2}}}) as inst:
        assert set(_rebalanced_threads(inst, fixed).values()) == {1}
