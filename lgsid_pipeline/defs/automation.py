"""Schedules and sensors: nightly re-tokenization of every city (only new or changed items
are encoded and assigned, with the frozen models), new data in the landing folder, and the
weekly retrain of the global models in lineage order (``retrain.py``; by hand: ``lgsid
retrain``)."""

import json
import os

import dagster as dg

from lgsid_pipeline import catalog
from lgsid_pipeline.cities import CityRegistry
from lgsid_pipeline.defs.executor import light_job_executor
from lgsid_pipeline.defs.resources import WorkspaceResource, city_partitions
from lgsid_pipeline.landing_watch import scan_landing
from lgsid_pipeline.retrain import (
    RETRAIN_STAGES,
    RETRAIN_TAG,
    STAGE_TAG,
    RetrainStage,
    advance_retrains,
    latest_statuses,
    retrain_id,
)

# Seconds between two evaluations of each sensor by the daemon (LGSID_SENSOR_INTERVAL_S).
SENSOR_INTERVAL_S = int(os.environ.get("LGSID_SENSOR_INTERVAL_S", "60"))

# Failures worth another try: a locked SQLite/DuckDB file, an MLflow store busy, a worker
# killed for memory. Each retry waits twice as long as the one before.
STEP_RETRIES = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL)

nightly_job = dg.define_asset_job(
    catalog.NIGHTLY_JOB_NAME,
    selection=dg.AssetSelection.assets(*catalog.CITY_CODE_ASSETS),
    description="Ingest what is new and give new or changed items embeddings and semantic "
    "IDs with the frozen models (one city partition per run).",
    op_retry_policy=STEP_RETRIES,
    executor_def=light_job_executor(),
)


@dg.schedule(
    job=nightly_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def nightly_retokenization(context: dg.ScheduleEvaluationContext):
    """02:00 UTC: one run per registered city (the run key makes a tick idempotent)."""
    cities = context.instance.get_dynamic_partitions("city")
    if not cities:
        return dg.SkipReason("no cities registered")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(run_key=f"{city}:{day}", partition_key=city) for city in cities]


def retrain_request(retrain: str, stage: RetrainStage, city: str | None) -> dg.RunRequest:
    """The run of one retrain stage (for one city, or global), with its de-duplication key."""
    return dg.RunRequest(
        run_key=f"{retrain}:{stage.name}:{city or 'global'}",
        job_name=catalog.CITY_JOB_NAME if stage.per_city else catalog.GLOBAL_JOB_NAME,
        partition_key=city,
        asset_selection=[dg.AssetKey(name) for name in stage.assets],
        tags={RETRAIN_TAG: retrain, STAGE_TAG: stage.name},
    )


@dg.schedule(
    job_name=catalog.GLOBAL_JOB_NAME,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def weekly_global_models(context: dg.ScheduleEvaluationContext):
    """Sunday 03:00 UTC (off until switched on): start a retrain with its first stage, the
    reward model; the ``retrain_stages`` sensor runs the rest in lineage order."""
    retrain = retrain_id(context.scheduled_execution_time)
    return retrain_request(retrain, RETRAIN_STAGES[0], None)


def retrain_statuses(
    instance: dg.DagsterInstance, retrain: str
) -> dict[tuple[str, str | None], str]:
    """Status of the latest run per (stage, city) of one retrain."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RETRAIN_TAG: retrain}))
    return latest_statuses((run.tags, run.status.value) for run in runs)


def build_retrain_sensor(jobs: list) -> dg.SensorDefinition:
    """The sensor that moves every started retrain to its next stage (see ``retrain.py``)."""

    @dg.sensor(
        name=catalog.RETRAIN_SENSOR_NAME,
        jobs=jobs,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource):
        first = dg.RunsFilter(tags={STAGE_TAG: RETRAIN_STAGES[0].name})
        advance = advance_retrains(
            [run.tags for run in context.instance.get_runs(filters=first, limit=20)],
            json.loads(context.cursor) if context.cursor else [],
            lambda retrain: retrain_statuses(context.instance, retrain),
            sorted(context.instance.get_dynamic_partitions("city")),
            workspace.stage_context().warehouse.has_table,
        )
        for line in advance.lines:
            context.log.info(line)
        return dg.SensorResult(
            run_requests=[retrain_request(*launch) for launch in advance.launches],
            cursor=json.dumps(advance.done[-50:]),
        )

    return _sensor


@dg.sensor(
    job=nightly_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource):
    """Watch ``LGSID_HOME/landing/<city>/``: register new cities (source ``landing``) and
    request an ingest + embeddings + semantic-IDs run for each city whose files changed.

    Files landed for a city registered with another source are additions to that source."""
    seen = json.loads(context.cursor) if context.cursor else {}
    store = workspace.stage_context()
    scan = scan_landing(store.landing, seen, CityRegistry(store.home))
    for reason in scan.skipped:
        context.log.warning(f"landing folder skipped: {reason}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"{city}:{fingerprint}", partition_key=city)
            for city, fingerprint in scan.changed.items()
        ],
        cursor=json.dumps(scan.seen, sort_keys=True),
        dynamic_partitions_requests=(
            [city_partitions.build_add_request(scan.new_cities)] if scan.new_cities else []
        ),
    )
