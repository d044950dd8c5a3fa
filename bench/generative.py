"""Generative benchmark on the real cities: TIGER and the OneRec-style decoder over RQ-KMeans,
RQ-VAE and LGSID codes, plus the popularity-near-last baseline; Hit/NDCG@5/10 on the test
period, train and inference times; then the per-user top-K cache.

Usage: .venv/bin/python bench/generative.py   (writes bench/results/generative.json)
Runs in LGSID_BENCH_HOME (or a temporary home) after bench/discriminative.py (it reuses the
recommender datasets' split); whatever is missing before is materialized first.
"""

from __future__ import annotations

import json
import os
import sys
import time

from common import (
    GENERATIVE,
    GENERATIVE_RUN_CONFIG,
    REAL_CITIES,
    RESULTS,
    ensure_item_embeddings,
    isolated_home,
)


def main() -> None:
    isolated_home("lgsid-gen-")

    from lgsid_pipeline.report import city_report
    from lgsid_pipeline.runner import get_instance, materialize
    from lgsid_pipeline.warehouse import Warehouse

    ensure_item_embeddings()
    warehouse = Warehouse()
    instance = get_instance()
    if not all(warehouse.has_table("recommender_meta", c) for c in REAL_CITIES):
        done = materialize(list(REAL_CITIES), instance=instance,
                           select="+recommender_datasets")
        if not all(r.success for r in done):
            sys.exit(f"datasets failed: {done}")
    started = time.perf_counter()
    results = materialize(list(REAL_CITIES), instance=instance, run_config=GENERATIVE_RUN_CONFIG,
                          select="tiger,onerec,generative_baseline,user_topk_cache,"
                                 "evaluation_report", parallel=2)
    seconds = time.perf_counter() - started
    if not all(r.success for r in results):
        print(json.dumps([r.__dict__ for r in results], indent=2))
        sys.exit(1)
    cities = {}
    for city in REAL_CITIES:
        table = city_report(warehouse, city)["generative"]
        cache = warehouse.read_table("user_topk_cache", city)
        cities[city] = {**{k: table[k] for k in ("tiger", "onerec", "baseline")},
                        "train_seconds": table["train_seconds"],
                        "inference_seconds": table["inference_seconds"],
                        "user_topk_cache": {"users": int(cache["user_id"].nunique()),
                                            "rows": len(cache)}}
    out = {"cities": cities, "stage_seconds": seconds, "config": GENERATIVE,
           "runs": [r.__dict__ for r in results], "machine": {"cpus": os.cpu_count()}}
    (RESULTS / "generative.json").write_text(json.dumps(out, indent=2) + "\n")
    for city, entry in cities.items():
        print(f"\n{city}")
        for model in ("tiger", "onerec"):
            for variant, m in entry[model].items():
                print(f"{model:7s} {variant:9s} " + " ".join(f"{k} {v:.4f}" for k, v in m.items()))
        print("baseline          " + " ".join(f"{k} {v:.4f}" for k, v in
                                              entry["baseline"].items()))


if __name__ == "__main__":
    main()
