"""Whole-pipeline benchmark on the real cities: every stage through Dagster from an empty
home, with wall time and peak memory per stage, encoding throughput, and the latency of a
1,000-item backfill picked up by the landing sensor.

Usage: .venv/bin/python bench/pipeline.py [--fresh]   (writes bench/results/pipeline.json)
Runs in LGSID_BENCH_HOME (or a temporary home), which must not hold an earlier run unless
``--fresh`` is given (it then clears the home's ``home/`` and ``dagster/`` folders first).
Each stage runs in a child process: ``peak_rss_mb`` is the largest resident set of any one
process of the stage (getrusage over the child and every process it waited for), and
``peak_tree_rss_mb`` the largest sum over the stage's process tree, sampled every 0.5 s.
The stages use the same settings as the other benchmarks (``common.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from common import (
    ALIGNMENT_RUN_CONFIG,
    DISCRIMINATIVE_RUN_CONFIG,
    GENERATIVE_RUN_CONFIG,
    REAL_CITIES,
    SEMANTIC_IDS_SELECTION,
    TOKENIZER_SELECTION,
    isolated_home,
    land_new_venues,
    register_real_cities,
    write_results,
)

from lgsid_pipeline.catalog import GLOBAL_MODEL_ASSETS, TOKENIZER_KINDS

# (stage, asset selection, run config), in pipeline order (runner.plan_stages' order, with
# the model-training steps as stages of their own).
STAGES: list[tuple[str, str, dict | None]] = [
    ("ingest", "raw_items,raw_interactions,items,interactions", None),
    ("alignment_samples", "geo_negatives,cooccurrence_pairs", ALIGNMENT_RUN_CONFIG),
    ("reward_model", "reward_model", ALIGNMENT_RUN_CONFIG),
    ("geo_pairs", "geo_pairs", ALIGNMENT_RUN_CONFIG),
    ("aligned_encoder", "aligned_encoder", ALIGNMENT_RUN_CONFIG),
    ("item_embeddings", "item_embeddings", None),
    ("tokenizers", TOKENIZER_SELECTION, None),
    ("semantic_ids", SEMANTIC_IDS_SELECTION, None),
    ("discriminative", "recommender_datasets,din,dien,sim,twin,eta", DISCRIMINATIVE_RUN_CONFIG),
    (
        "generative",
        "tiger,onerec,generative_baseline,user_topk_cache,evaluation_report",
        GENERATIVE_RUN_CONFIG,
    ),
]
BACKFILL_CITY = "new-york"
BACKFILL_ITEMS = 1000


def _metadata(instance, run_id: str, asset: str) -> dict:
    """Metadata of each materialization of ``asset`` in one run, by partition."""
    found = {}
    for event in instance.all_logs(run_id):
        dagster_event = event.dagster_event
        if dagster_event and dagster_event.event_type_value == "ASSET_MATERIALIZATION":
            materialization = dagster_event.event_specific_data.materialization
            if materialization.asset_key.to_user_string() == asset:
                found[materialization.partition] = {
                    k: v.value for k, v in materialization.metadata.items()
                }
    return found


def _champion_versions() -> dict[str, str]:
    """The champion version of every global model (a retrain would move one)."""
    from mlflow import MlflowClient

    from lgsid_pipeline.registry import CHAMPION, tracking_uri

    tracking_uri()
    client = MlflowClient()
    names = tuple(GLOBAL_MODEL_ASSETS)
    return {name: client.get_model_version_by_alias(name, CHAMPION).version for name in names}


def run_stage(name: str) -> dict:
    """Run one stage in this process (the child side); return what the parent records."""
    from lgsid_pipeline.runner import get_instance, materialize

    instance = get_instance()
    if name == "backfill":
        return _backfill(instance)
    selection, config = next((s, c) for n, s, c in STAGES if n == name)
    results = materialize(
        list(REAL_CITIES), select=selection, instance=instance, run_config=config, parallel=2
    )
    out: dict = {"success": all(r.success for r in results), "runs": [r.__dict__ for r in results]}
    if name == "item_embeddings":
        meta = [m for r in results for m in _metadata(instance, r.run_id, name).values()]
        encoded = sum(m["encoded"] + m["reference_encoded"] for m in meta)
        out["encoded"] = encoded
        out["encode_seconds"] = sum(m["encode_seconds"] for m in meta)
    return out


def _backfill(instance) -> dict:
    """Land 1,000 new items, tick the landing sensor, run what it requests; check that the
    new items got embeddings and codes and that no model was retrained."""
    from lgsid_pipeline.catalog import NIGHTLY_JOB_NAME
    from lgsid_pipeline.config import lgsid_home
    from lgsid_pipeline.runner import execute_run_request, tick_sensor
    from lgsid_pipeline.warehouse import Warehouse

    before = _champion_versions()
    started = time.perf_counter()
    new_ids = land_new_venues(lgsid_home(), BACKFILL_CITY, "bench-new", BACKFILL_ITEMS)
    tick = tick_sensor("landing_sensor", instance)
    sensor_seconds = time.perf_counter() - started
    results = [execute_run_request(r, NIGHTLY_JOB_NAME, instance) for r in tick.run_requests]
    seconds = time.perf_counter() - started
    warehouse = Warehouse()
    coded = {
        kind: int(
            warehouse.read_table("semantic_ids", BACKFILL_CITY, kind)["item_id"].isin(new_ids).sum()
        )
        for kind in TOKENIZER_KINDS
    }
    embedded = int(
        warehouse.read_table("item_embeddings", BACKFILL_CITY, "aligned")["item_id"]
        .isin(new_ids)
        .sum()
    )
    keys = ("assigned", "reused", "churn", "encoded", "reference_encoded", "encode_seconds")
    counts = {
        asset: {
            k: v
            for m in _metadata(instance, r.run_id, asset).values()
            for k, v in m.items()
            if k in keys
        }
        for r in results
        for asset in ("item_embeddings", "semantic_ids")
    }
    return {
        "success": bool(results) and all(r.success for r in results),
        "runs": [r.__dict__ for r in results],
        "requested": [r.partition_key for r in tick.run_requests],
        "items_landed": len(new_ids),
        "items_embedded": embedded,
        "items_coded": coded,
        "run_metadata": counts,
        "sensor_seconds": round(sensor_seconds, 2),
        "seconds": round(seconds, 2),
        "models_unchanged": before == _champion_versions(),
    }


def _tree_rss_mb(root: psutil.Process) -> float:
    """Resident memory of a process and all its descendants, in MiB (0 once it is gone)."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def _measure(name: str) -> dict:
    """Run one stage as a child process; wall time, peak memory and the child's report."""
    command = [sys.executable, __file__, "--stage", name]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak_tree = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        root = psutil.Process(child.pid)
        while not done.wait(0.5):
            peak_tree = max(peak_tree, _tree_rss_mb(root))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = child.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        sys.exit(f"stage {name} exited with {child.returncode}")
    report = json.loads(stdout.strip().splitlines()[-1])
    if not report["success"]:
        print(json.dumps(report, indent=2, default=str))
        sys.exit(f"stage {name} failed")
    print(
        f"{name}: {seconds:.1f}s, peak process {report['peak_rss_mb']:.0f} MB, "
        f"peak tree {peak_tree:.0f} MB",
        flush=True,
    )
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": report.pop("peak_rss_mb"),
        "peak_tree_rss_mb": round(peak_tree, 1),
        **report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="clear the bench home's home/ and dagster/ folders first",
    )
    args = parser.parse_args()
    if args.stage:
        report = run_stage(args.stage)
        peak_kb = max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        report["peak_rss_mb"] = round(peak_kb / 1024, 1)
        print(json.dumps(report, default=str))
        return

    kept = os.environ.get("LGSID_BENCH_HOME")
    if kept and args.fresh:
        for sub in ("home", "dagster"):
            shutil.rmtree(Path(kept) / sub, ignore_errors=True)
    scratch = isolated_home("lgsid-pipeline-")
    if (scratch / "home" / "warehouse").exists():
        sys.exit(f"{scratch} holds an earlier run; pass --fresh to clear it")
    register_real_cities()
    started = time.perf_counter()
    stages = {name: _measure(name) for name, _, _ in STAGES}
    total = time.perf_counter() - started
    backfill = _measure("backfill")
    embeddings = stages["item_embeddings"]
    out = {
        "cities": list(REAL_CITIES),
        "stages": {
            name: {
                "seconds": s["seconds"],
                "peak_rss_mb": s["peak_rss_mb"],
                "peak_tree_rss_mb": s["peak_tree_rss_mb"],
            }
            for name, s in stages.items()
        },
        "total_seconds": round(total, 2),
        "encode_items_per_s": round(embeddings["encoded"] / embeddings["encode_seconds"], 1),
        "backfill_1000_items_seconds": backfill["seconds"],
        "backfill": {k: v for k, v in backfill.items() if k != "runs"},
        "encode": {
            "items_encoded": embeddings["encoded"],
            "encode_seconds": round(embeddings["encode_seconds"], 2),
            "note": "reference + aligned embeddings of both cities; the two cities "
            "encode at once, so items/s is per process summed over time",
        },
        "runs": {name: s["runs"] for name, s in {**stages, "backfill": backfill}.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        },
    }
    write_results(
        "pipeline",
        out,
        {
            "cities": REAL_CITIES,
            "backfill": {"city": BACKFILL_CITY, "items": BACKFILL_ITEMS},
            "stages": [{"stage": n, "selection": s, "run_config": c} for n, s, c in STAGES],
        },
    )
    print(
        f"total {total:.0f}s; encoding {out['encode_items_per_s']} items/s; backfill of "
        f"{BACKFILL_ITEMS} items {backfill['seconds']:.1f}s "
        f"(models unchanged: {backfill['models_unchanged']})"
    )


if __name__ == "__main__":
    main()
