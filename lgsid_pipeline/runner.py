"""Run the pipeline on the shared Dagster instance (used by the CLI, the tests and bench/).

A selection is cut into stages at the global (all-city) assets: per-city assets before a
global model run once per city (cities in parallel), then the global model trains on every
city, then the per-city assets after it run, and so on.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from lgsid_pipeline.catalog import INGEST_ASSETS
from lgsid_pipeline.cities import CityRegistry
from lgsid_pipeline.config import PARALLEL_CITIES, dagster_home, validate_city_slug
from lgsid_pipeline.retrain import RetrainStep, next_step

GLOBAL = "(global)"


@dataclass
class RunResult:
    """Outcome of one run: a city's (``city`` = slug) or a global one (``city`` = GLOBAL)."""

    city: str
    run_id: str
    success: bool
    failed_steps: list[str]
    failed_checks: list[str]


def get_instance() -> dg.DagsterInstance:
    """The Dagster instance the UI uses (``DAGSTER_HOME``, default ``<repo>/dagster_home``)."""
    os.environ.setdefault("DAGSTER_HOME", str(dagster_home()))
    return dg.DagsterInstance.get()


def sync_city_partitions(instance: dg.DagsterInstance, registry: CityRegistry) -> list[str]:
    """Make the instance's ``city`` partitions match the registry (adds missing ones)."""
    slugs = [c.slug for c in registry.all()]
    existing = set(instance.get_dynamic_partitions("city"))
    missing = [s for s in slugs if s not in existing]
    if missing:
        instance.add_dynamic_partitions("city", missing)
    return slugs


def resolve_selection(select: str | None) -> list[dg.AssetKey]:
    """Asset keys for a selection: Dagster's selection syntax or a comma-separated key list.

    Assets produced together (``raw_items`` and ``raw_interactions``) are always selected
    together. No selection means every asset.
    """
    from lgsid_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    if not select:
        return sorted(graph.get_all_asset_keys())
    names = [s.strip() for s in select.split(",") if s.strip()]
    try:
        selection = dg.AssetSelection.from_string(names[0])
        for name in names[1:]:
            selection = selection | dg.AssetSelection.from_string(name)
        keys = selection.required_multi_asset_neighbors().resolve(graph)
    except Exception as exc:  # noqa: BLE001 - the selection parser raises several types
        raise ValueError(f"invalid asset selection {select!r}: {exc}") from exc
    if not keys:
        raise ValueError(f"asset selection {select!r} matches no asset")
    return sorted(keys)


def plan_stages(keys: Sequence[dg.AssetKey]) -> list[tuple[bool, list[dg.AssetKey]]]:
    """Split selected keys into ordered stages of (is_global, keys)."""
    from lgsid_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    selected = set(keys)
    stage: dict[dg.AssetKey, int] = {}
    for key in graph.toposorted_asset_keys:
        if key not in selected:
            continue
        is_global = graph.get(key).partitions_def is None
        level = 0
        for parent in graph.get(key).parent_keys:
            if parent in stage:
                parent_global = graph.get(parent).partitions_def is None
                level = max(level, stage[parent] + (parent_global != is_global))
        # Stage parity encodes the kind: even stages per city, odd stages global.
        if (level % 2 == 1) != is_global:
            level += 1
        stage[key] = level
    stages: list[tuple[bool, list[dg.AssetKey]]] = []
    for level in sorted(set(stage.values())):
        stages.append((level % 2 == 1, sorted(k for k, v in stage.items() if v == level)))
    return stages


def _execute(
    job_name: str,
    instance_ref: dg.InstanceRef | None,
    keys: list[str],
    tags: dict[str, str],
    run_config: dict | None,
    label: str,
) -> RunResult:
    """Execute one run of a job of the code location (in this process or a worker)."""
    from lgsid_pipeline import definitions

    instance = dg.DagsterInstance.from_ref(instance_ref) if instance_ref else get_instance()
    job_fn = getattr(definitions, f"{job_name}_def")
    result = dg.execute_job(
        dg.reconstructable(job_fn),
        instance=instance,
        tags=tags,
        asset_selection=[dg.AssetKey.from_user_string(k) for k in keys],
        run_config=run_config,
    )
    failed = [
        e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key
    ]
    failed_checks = [
        e.event_specific_data.check_name
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed
    ]
    return RunResult(label, result.run_id, result.success, failed, failed_checks)


def materialize(
    cities: Sequence[str],
    select: str | None = None,
    instance: dg.DagsterInstance | None = None,
    parallel: int = PARALLEL_CITIES,
    registry: CityRegistry | None = None,
    run_config: dict | None = None,
    on_stage: Callable[[StageProgress], None] | None = None,
) -> list[RunResult]:
    """Materialize the selection for ``cities`` stage by stage; stop after a failed stage.

    Each run uses the multiprocess executor and is recorded in the instance (the UI shows
    it). ``run_config`` is Dagster run config (``ops``, ``resources``, ``loggers``) applied to
    every run. ``on_stage`` hears about each stage when its runs have finished.
    """
    registry = registry or CityRegistry()
    instance = instance or get_instance()
    for city in cities:
        validate_city_slug(city)
        registry.get(city)  # clear error for unknown cities before anything runs
    stages = plan_stages(resolve_selection(select))
    sync_city_partitions(instance, registry)
    ref = instance.get_ref()
    results: list[RunResult] = []
    for number, (is_global, keys) in enumerate(stages, start=1):
        started, done = time.perf_counter(), len(results)
        runs_at_once = 1 if is_global or parallel <= 1 else min(parallel, len(cities))
        config = with_step_threads(_config_for(run_config, keys), runs_at_once)
        names = [k.to_user_string() for k in keys]
        if is_global:
            results.append(_execute("global_job", ref, names, {}, config, GLOBAL))
        elif parallel <= 1 or len(cities) == 1:
            results += [
                _execute("city_job", ref, names, {"dagster/partition": c}, config, c)
                for c in cities
            ]
        else:
            # One worker process per city run: Dagster's run set-up reconfigures logging,
            # which is not safe from several threads of one process.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=parallel, mp_context=context) as pool:
                futures = [
                    pool.submit(
                        _execute, "city_job", ref, names, {"dagster/partition": c}, config, c
                    )
                    for c in cities
                ]
                results += [f.result() for f in futures]
        if on_stage:
            on_stage(
                StageProgress(
                    number, len(stages), names, results[done:], time.perf_counter() - started
                )
            )
        if not all(r.success for r in results):
            break
    return results


@dataclass(frozen=True)
class StageProgress:
    """A finished stage of :func:`materialize`: its number of ``total``, its assets, its
    runs (one per city, or one global run) and how long they took."""

    number: int
    total: int
    assets: list[str]
    runs: list[RunResult]
    seconds: float

    def line(self) -> str:
        """One progress line: ``[3/9] item_embeddings: 3 runs ok in 41s``."""
        failed = [r.city for r in self.runs if not r.success]
        state = f"FAILED in {', '.join(failed)}" if failed else "ok"
        shown = (
            ", ".join(self.assets)
            if len(self.assets) <= 4
            else f"{', '.join(self.assets[:4])} and {len(self.assets) - 4} more"
        )
        return (
            f"[{self.number}/{self.total}] {shown}: {len(self.runs)} "
            f"run{'s' if len(self.runs) != 1 else ''} {state} in {self.seconds:.0f}s"
        )


def with_step_threads(
    run_config: dict | None, runs_at_once: int, environ: dict[str, str] | None = None
) -> dict | None:
    """With the in-process executor a run's steps run one after another, so a stage of
    ``runs_at_once`` runs has that many compute steps at once: give each the cores divided
    by it (``torch_threads``), unless the run config sets threads itself. Under another
    executor the compute pool's limit decides (``WorkspaceResource.limit_threads``)."""
    from lgsid_pipeline.defs.executor import EXECUTOR_ENV
    from lgsid_pipeline.threads import available_cores, threads_per_step

    environ = dict(os.environ) if environ is None else environ
    if environ.get(EXECUTOR_ENV, "").strip() != "in_process":
        return run_config
    config = dict(run_config or {})
    resources = dict(config.get("resources", {}))
    workspace = dict(resources.get("workspace", {}))
    settings = dict(workspace.get("config", {}))
    if settings.get("torch_threads"):
        return run_config
    settings["torch_threads"] = threads_per_step(available_cores(), runs_at_once)
    workspace["config"], resources["workspace"], config["resources"] = (
        settings,
        workspace,
        resources,
    )
    return config


def _config_for(run_config: dict | None, keys: list[dg.AssetKey]) -> dict | None:
    """Keep only the ``ops`` entries of assets (or the ingest op) in this stage (Dagster
    rejects the others)."""
    if not run_config:
        return None
    from lgsid_pipeline.defs.ingest import ingest_tables

    names = {k.to_user_string() for k in keys}
    if names & set(INGEST_ASSETS):  # the four ingest tables are one op, configured by its name
        names.add(ingest_tables.op.name)
    config = {k: v for k, v in run_config.items() if k != "ops"}
    ops = {k: v for k, v in run_config.get("ops", {}).items() if k in names}
    if ops:
        config["ops"] = ops
    return config or None


def quarantine_config(max_quarantine_rate: float | None) -> dict | None:
    """Run config setting the blocking checks' quarantine limit."""
    if max_quarantine_rate is None:
        return None
    return {"resources": {"workspace": {"config": {"max_quarantine_rate": max_quarantine_rate}}}}


def tick_sensor(
    name: str, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """Evaluate one sensor of the code location once, as the daemon does on each interval."""
    from lgsid_pipeline.definitions import defs
    from lgsid_pipeline.defs.resources import WorkspaceResource

    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources={"workspace": WorkspaceResource()},
    )
    result = defs.get_sensor_def(name)(context)
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
    return result


def execute_run_request(
    request: dg.RunRequest,
    job_name: str,
    instance: dg.DagsterInstance,
    run_config: dict | None = None,
) -> RunResult:
    """Run what a sensor or schedule requested (one partition of one job, the request's asset
    selection or else the whole job) in this process, with the request's tags."""
    from lgsid_pipeline.definitions import JOB_FUNCTIONS, defs

    if job_name not in JOB_FUNCTIONS:
        raise ValueError(f"unknown job {job_name!r}; jobs: {', '.join(sorted(JOB_FUNCTIONS))}")
    keys = sorted(
        request.asset_selection or defs.resolve_job_def(job_name).asset_layer.executable_asset_keys
    )
    tags = {**request.tags}
    if request.partition_key:
        tags["dagster/partition"] = request.partition_key
    return _execute(
        JOB_FUNCTIONS[job_name],
        instance.get_ref(),
        [k.to_user_string() for k in keys],
        tags,
        _config_for(run_config, keys),
        request.partition_key or GLOBAL,
    )


def retrain(
    instance: dg.DagsterInstance | None = None,
    run_config: dict | None = None,
    name: str | None = None,
    registry: CityRegistry | None = None,
) -> tuple[list[RunResult], RetrainStep]:
    """Run a whole staged retrain of the global models in this process, stage by stage in
    lineage order (``retrain.RETRAIN_STAGES``), exactly as the weekly schedule and the
    ``retrain_stages`` sensor do through the daemon. Returns the runs and the final step
    (``done``, or ``halted`` with the reason). ``run_config`` applies to every stage."""
    from lgsid_pipeline.defs.automation import retrain_request, retrain_statuses
    from lgsid_pipeline.warehouse import Warehouse

    instance = instance or get_instance()
    warehouse = Warehouse()
    cities = sync_city_partitions(instance, registry or CityRegistry())
    name = name or f"manual-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    results: list[RunResult] = []
    while True:
        step = next_step(retrain_statuses(instance, name), cities, warehouse.has_table)
        if step.state != "launch" or step.stage is None:
            return results, step
        for city in step.partitions:
            request = retrain_request(name, step.stage, city)
            results.append(execute_run_request(request, request.job_name, instance, run_config))
