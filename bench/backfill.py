"""What a 1,000-venue New York backfill costs in process, step by step, and through a real
daemon, on a home of New York
alone trained with the demo's small budgets (a backfill retrains nothing, so what it costs
depends on the table sizes, not on how well the models were trained).

Usage: .venv/bin/python bench/backfill.py   (writes bench/results/backfill.json)
About 10 minutes the first time on two cores: most of it builds the home (56,000 texts
through the real encoder); about 4 minutes once the home exists (the daemon's part takes 2
to 3 of them). With LGSID_BENCH_HOME set, the home is kept under
``<LGSID_BENCH_HOME>/backfill-new-york`` and reused. The backfill itself runs on a copy:
two nightly runs with nothing new (the first records the source fingerprints), then the
venues land, the landing sensor ticks and the nightly job runs what it asks for, in this
process. Then a real ``dagster-daemon`` runs on the same copy and another 1,000 venues land
(``bench/freshness.py``'s ``backfill_daemon``): landing to codes through the sensor's tick,
the run queue and the launcher, whose floor is the wait for the next 60 s tick plus the run
process's start and import plus the in-process figure. ``--skip-daemon`` leaves it out.
``bench/freshness.py`` measures the same on the full two-city bench home.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import REAL_CITIES, land_new_venues, write_results
from freshness import backfill_daemon

CITY = "new-york"
VENUES = 1000
UP_TO_CODES = "*semantic_ids,*rqkmeans_semantic_ids,*rqvae_semantic_ids"


def build_home(root: Path) -> float:
    """Materialize New York through its three code tables under ``root``; seconds taken
    (0 when ``root`` already holds them)."""
    from lgsid_pipeline.cities import CityConfig, CityRegistry
    from lgsid_pipeline.config import shared_data_dir
    from lgsid_pipeline.demo.run import DEMO_RUN_CONFIG
    from lgsid_pipeline.runner import get_instance, materialize, sync_city_partitions
    from lgsid_pipeline.warehouse import Warehouse

    if Warehouse().has_table("semantic_ids", CITY, "rqvae"):
        return 0.0
    source, folder = REAL_CITIES[CITY]
    registry = CityRegistry()
    registry.add(CityConfig(slug=CITY, source=source, path=str(shared_data_dir() / folder)))
    sync_city_partitions(get_instance(), registry)
    started = time.perf_counter()
    results = materialize(
        [CITY],
        select=UP_TO_CODES,
        instance=get_instance(),
        run_config={"ops": DEMO_RUN_CONFIG["ops"]},
        on_stage=lambda stage: print(stage.line(), flush=True),
    )
    if not all(r.success for r in results):
        sys.exit(f"building the New York home failed: {results}")
    return time.perf_counter() - started


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Each step's seconds in a run, longest first."""
    rows = {
        e.step_key: e.dagster_event.event_specific_data.duration_ms / 1000
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_SUCCESS"
    }
    return {k: round(v, 2) for k, v in sorted(rows.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-daemon", action="store_true", help="no dagster-daemon run")
    args = parser.parse_args()
    kept = os.environ.get("LGSID_BENCH_HOME")
    root = Path(kept) / "backfill-new-york" if kept else Path(tempfile.mkdtemp(prefix="bf-"))
    for sub in ("home", "dagster"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.environ["LGSID_HOME"], os.environ["DAGSTER_HOME"] = str(root / "home"), str(root / "dagster")
    os.environ["LGSID_EXECUTOR"] = "in_process"
    build_seconds = build_home(root)

    scratch = Path(tempfile.mkdtemp(prefix="bf-run-"))
    try:
        for sub in ("home", "dagster"):
            shutil.copytree(root / sub, scratch / sub, symlinks=True)
        os.environ["LGSID_HOME"] = str(scratch / "home")
        os.environ["DAGSTER_HOME"] = str(scratch / "dagster")
        import dagster as dg

        from lgsid_pipeline.catalog import NIGHTLY_JOB_NAME
        from lgsid_pipeline.runner import execute_run_request, get_instance, tick_sensor

        instance = get_instance()
        nightly = []
        for _ in range(2):
            started = time.perf_counter()
            execute_run_request(dg.RunRequest(partition_key=CITY), NIGHTLY_JOB_NAME, instance)
            nightly.append(round(time.perf_counter() - started, 2))
        started = time.perf_counter()
        land_new_venues(scratch / "home", CITY, "fresh", VENUES, seed=11)
        tick = tick_sensor("landing_sensor", instance)
        runs = [execute_run_request(r, NIGHTLY_JOB_NAME, instance) for r in tick.run_requests]
        seconds = time.perf_counter() - started
        if not runs or not all(r.success for r in runs):
            sys.exit("the backfill run failed")
        print(f"backfill of {VENUES} venues in process: {seconds:.1f}s", flush=True)
        results = {
            "backfill_1000_items_seconds": round(seconds, 2),
            "steps_seconds": step_seconds(instance, runs[0].run_id),
            "nightly_noop_seconds": {"first": nightly[0], "second": nightly[1]},
            "home_build_seconds": round(build_seconds, 1),
            "backfill_1000_items_daemon_seconds": None,
            "notes": "New York alone, models trained with the demo's budgets; the backfill "
            "runs in a process that ran two nightly no-ops first (no encoder loaded yet); "
            "the daemon figure includes the wait for the sensor's next 60 s tick.",
        }
        if not args.skip_daemon:
            daemon = backfill_daemon(scratch)
            results["backfill_1000_items_daemon_seconds"] = daemon["seconds"]
            results["daemon"] = daemon
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_results("backfill", results, {"city": CITY, "venues": VENUES, "seed": 11})


if __name__ == "__main__":
    main()
