"""Alignment-stage benchmark on the real cities: before/after geography, reward accuracy,
encoding speed (fp32 vs bf16) and the stage's wall time.

Usage: .venv/bin/python bench/alignment.py   (writes bench/results/alignment.json)
Runs the whole pipeline up to item_embeddings through Dagster in a temporary LGSID_HOME,
with the real all-MiniLM-L6-v2 encoder, on ../shared/data (or LGSID_SHARED_DATA).
"""

from __future__ import annotations

import json
import os
import sys
import time

from common import (
    ALIGNMENT_RUN_CONFIG,
    REAL_CITIES,
    isolated_home,
    register_real_cities,
    write_results,
)

RUN_CONFIG = ALIGNMENT_RUN_CONFIG
METRIC_KEYS = ("nmi_level1", "nmi_level2", "p_at_10", "c_at_10", "t_at_10", "similarity_at_10")


def encode_speed(n: int = 2000) -> dict[str, float]:
    """Items/s of the real encoder on real New York prompts, fp32 and bf16, plus agreement."""
    from lgsid_pipeline.encoder import TextEncoder, bf16_agreement, item_prompts
    from lgsid_pipeline.warehouse import Warehouse

    items = Warehouse().read_table("items", "new-york").sample(n, random_state=0)
    texts = item_prompts(items)
    encoder = TextEncoder.load()
    encoder.encode(texts[:64], dtype="fp32")  # warm-up
    speed = {}
    for dtype in ("fp32", "bf16"):
        started = time.perf_counter()
        encoder.encode(texts, dtype=dtype)
        speed[dtype] = n / (time.perf_counter() - started)
    speed["bf16_fp32_cosine"] = bf16_agreement(encoder, texts[:500])
    return speed


def main() -> None:
    isolated_home("lgsid-align-")

    import dagster as dg

    from lgsid_pipeline.report import city_report
    from lgsid_pipeline.runner import materialize
    from lgsid_pipeline.warehouse import Warehouse

    register_real_cities()
    runs = []
    started = time.perf_counter()
    with dg.instance_for_test() as instance:
        ingest = materialize(list(REAL_CITIES), select="group:ingest", instance=instance)
        ingest_seconds = time.perf_counter() - started
        stage_started = time.perf_counter()
        results = materialize(
            list(REAL_CITIES), select="*item_embeddings", instance=instance, run_config=RUN_CONFIG
        )
        stage_seconds = time.perf_counter() - stage_started
        runs = [r.__dict__ for r in [*ingest, *results]]
    if not all(r["success"] for r in runs):
        print(json.dumps(runs, indent=2))
        sys.exit(1)
    warehouse = Warehouse()
    cities = {}
    reward = {}
    for slug in REAL_CITIES:
        alignment = city_report(warehouse, slug)["alignment"]
        cities[slug] = {
            stage: {k: alignment[stage][k] for k in METRIC_KEYS} for stage in ("before", "after")
        }
        cities[slug]["all_metrics"] = {"before": alignment["before"], "after": alignment["after"]}
        reward = alignment["reward"]
    speed = encode_speed()
    out = {
        "cities": cities,
        "reward": reward,
        "encode_items_per_s": {"fp32": speed["fp32"], "bf16": speed["bf16"]},
        "bf16_fp32_cosine": speed["bf16_fp32_cosine"],
        "stage_seconds": stage_seconds,
        "ingest_seconds": ingest_seconds,
        "run_config": RUN_CONFIG,
        "runs": runs,
        "machine": {"cpus": os.cpu_count()},
    }
    write_results(
        "alignment",
        out,
        {"cities": REAL_CITIES, "run_config": RUN_CONFIG, "encode_speed_items": 2000},
    )
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2, default=str))


if __name__ == "__main__":
    main()
