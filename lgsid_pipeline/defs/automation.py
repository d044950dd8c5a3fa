"""Schedules: nightly re-tokenization of every city, weekly retraining of the global models.

The nightly job re-reads each city's source, re-cleans it and brings embeddings and semantic
IDs up to date with the frozen models: only new or changed items are encoded and assigned,
so a night with nothing new changes nothing. Global models (reward model, aligned encoder,
tokenizers) retrain weekly when that schedule is switched on, or by hand.
"""

import dagster as dg

NIGHTLY_JOB_NAME = "nightly_retokenization"
NIGHTLY_ASSETS = ["raw_items", "raw_interactions", "items", "interactions", "item_embeddings",
                  "semantic_ids", "rqkmeans_semantic_ids", "rqvae_semantic_ids"]

# Failures worth another try: a locked SQLite/DuckDB file, an MLflow store busy, a worker
# killed for memory. Each retry waits twice as long as the one before.
STEP_RETRIES = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL)

nightly_job = dg.define_asset_job(
    NIGHTLY_JOB_NAME,
    selection=dg.AssetSelection.assets(*NIGHTLY_ASSETS),
    description="Ingest what is new and give new or changed items embeddings and semantic "
                "IDs with the frozen models (one city partition per run).",
    op_retry_policy=STEP_RETRIES,
)


@dg.schedule(job=nightly_job, cron_schedule="0 2 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING)
def nightly_retokenization(context: dg.ScheduleEvaluationContext):
    """02:00 UTC: one run per registered city (the run key makes a tick idempotent)."""
    cities = context.instance.get_dynamic_partitions("city")
    if not cities:
        return dg.SkipReason("no cities registered")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(run_key=f"{city}:{day}", partition_key=city) for city in cities]


weekly_global_models = dg.ScheduleDefinition(
    name="weekly_global_models", job_name="global_models", cron_schedule="0 3 * * 0",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Sunday 03:00 UTC: retrain reward model, aligned encoder and tokenizers on "
                "every city (off until switched on); tokenizers warm-start from their "
                "champions so codes stay stable.")
