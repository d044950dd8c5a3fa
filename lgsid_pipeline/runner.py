"""Run the per-city Dagster job on the shared instance (used by the CLI and the tests)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg

from lgsid_pipeline.cities import CityRegistry
from lgsid_pipeline.config import dagster_home, validate_city_slug


@dataclass
class CityRunResult:
    """Outcome of one city's run."""

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
    together.
    """
    from lgsid_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    partitioned = {k for k in graph.get_all_asset_keys()
                   if graph.get(k).partitions_def is not None}
    if not select:
        return sorted(partitioned)
    names = [s.strip() for s in select.split(",")] if "," in select else [select]
    selection = dg.AssetSelection.from_string(names[0])
    for name in names[1:]:
        selection = selection | dg.AssetSelection.from_string(name)
    try:
        keys = selection.required_multi_asset_neighbors().resolve(graph)
    except dg.DagsterInvalidSubsetError as exc:
        raise ValueError(f"invalid asset selection {select!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the selection parser raises several types
        raise ValueError(f"invalid asset selection {select!r}: {exc}") from exc
    keys = {k for k in keys if k in partitioned}
    if not keys:
        raise ValueError(f"asset selection {select!r} matches no per-city asset; known: "
                         f"{', '.join(sorted(k.to_user_string() for k in partitioned))}")
    return sorted(keys)


def materialize_cities(
    cities: Sequence[str],
    select: str | None = None,
    instance: dg.DagsterInstance | None = None,
    parallel: int = 2,
    registry: CityRegistry | None = None,
    max_quarantine_rate: float | None = None,
) -> list[CityRunResult]:
    """Materialize the selected assets for each city, ``parallel`` cities at a time.

    Each city is one run of the per-city job under the multiprocess executor, recorded in the
    instance so the UI shows it.
    """
    from lgsid_pipeline.definitions import city_job_def

    registry = registry or CityRegistry()
    instance = instance or get_instance()
    for city in cities:
        validate_city_slug(city)
        registry.get(city)  # clear error for unknown cities before anything runs
    keys = resolve_selection(select)
    sync_city_partitions(instance, registry)
    job = dg.reconstructable(city_job_def)
    run_config = ({"resources": {"lgsid": {"config": {"max_quarantine_rate": max_quarantine_rate}}}}
                  if max_quarantine_rate is not None else None)

    def run_one(city: str) -> CityRunResult:
        result = dg.execute_job(job, instance=instance, tags={"dagster/partition": city},
                                asset_selection=keys, run_config=run_config)
        failed = [e.step_key for e in result.all_events
                  if e.event_type_value == "STEP_FAILURE" and e.step_key]
        failed_checks = [
            e.event_specific_data.check_name for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed
        ]
        return CityRunResult(city, result.run_id, result.success, failed, failed_checks)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(run_one, cities))
