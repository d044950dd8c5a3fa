"""Ingest benchmark on the real cities: stage times, counts, quarantine and admin coverage.

Usage: .venv/bin/python bench/ingest.py   (writes bench/results/ingest.json)
Reads ../shared/data (or LGSID_SHARED_DATA); runs in a temporary LGSID_HOME and Dagster home.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time

from common import REAL_CITIES, isolated_home, register_real_cities, write_results


def main() -> None:
    isolated_home("lgsid-bench-")

    import dagster as dg

    from lgsid_pipeline.ingest import clean_interactions, clean_items, raw_tables
    from lgsid_pipeline.report import city_report
    from lgsid_pipeline.runner import materialize
    from lgsid_pipeline.warehouse import Warehouse

    results: dict[str, dict] = {}
    for config in register_real_cities():
        slug = config.slug
        t0 = time.perf_counter()
        raw_items, raw_inter = raw_tables(config)
        t1 = time.perf_counter()
        items = clean_items(
            raw_items.drop(columns=["city", "city_name"]),
            config,
            str(raw_items["city_name"].iloc[0]),
        )
        t2 = time.perf_counter()
        clean_interactions(raw_inter.drop(columns=["city"]), items.clean, slug)
        t3 = time.perf_counter()
        results[slug] = {
            "library_seconds": {
                "read_source": round(t1 - t0, 3),
                "clean_items": round(t2 - t1, 3),
                "clean_interactions": round(t3 - t2, 3),
                "total": round(t3 - t0, 3),
            }
        }
    with dg.instance_for_test() as instance:
        for slug in REAL_CITIES:
            t0 = time.perf_counter()
            run = materialize([slug], select="group:ingest", instance=instance, parallel=1)[0]
            results[slug]["dagster_run_seconds"] = round(time.perf_counter() - t0, 2)
            results[slug]["run_success"] = run.success
            report = city_report(Warehouse(), slug)
            results[slug]["items"] = report["items"]
            results[slug]["interactions"] = report["interactions"]
            results[slug]["quarantine"] = report["quarantine_by_table"]
    out = {
        "cities": results,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
    }
    write_results(
        "ingest", out, {"cities": REAL_CITIES, "selection": "group:ingest", "parallel": 1}
    )
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
