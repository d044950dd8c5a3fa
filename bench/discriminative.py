"""Discriminative benchmark on the real cities: DIN, DIEN, SIM, TWIN, ETA x {item ids only,
+RQ-KMeans, +RQ-VAE, +LGSID codes}, test AUC and train time.

Usage: .venv/bin/python bench/discriminative.py   (writes bench/results/discriminative.json)
Runs in LGSID_BENCH_HOME (or a temporary home); materializes what is missing up to the
semantic IDs first (bench/tokenizer.py leaves them there), then the recommender stage of both
cities through Dagster, two cities at a time with one torch thread each. Early stopping uses
the validation period only; the test period is read once per model.

DIN is trained with three seeds per variant (its AUC is the seed mean, its 95% interval a
joint bootstrap over seeds and test examples), the other backbones with one (a bootstrap
over test examples).

``--ablations`` adds DIN on the ablation codes of bench/ablations.py (no G-DPO, no
geographic level, G-DPO at lambda 0), three seeds each on the same datasets, to the
existing JSON under each city's ``ablations``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from common import (
    BACKBONES,
    DATASET,
    DISCRIMINATIVE_RUN_CONFIG,
    REAL_CITIES,
    RESULTS,
    SEMANTIC_IDS_SELECTION,
    TOKENIZER_SELECTION,
    TRAINING,
    ensure_item_embeddings,
    isolated_home,
    provenance,
)

from lgsid_pipeline.catalog import CTR_VARIANTS, TOKENIZER_KINDS

VARIANTS = CTR_VARIANTS
SEEDS = {backbone: 3 if backbone == "din" else 1 for backbone in BACKBONES}
# The common run config, each backbone's training with its number of seeds on top.
RUN_CONFIG = {
    **DISCRIMINATIVE_RUN_CONFIG,
    "ops": {
        **DISCRIMINATIVE_RUN_CONFIG["ops"],
        **{b: {"config": {**TRAINING, "seeds": n}} for b, n in SEEDS.items()},
    },
}


ABLATION_BACKBONE = "din"


def run_ablations(path, seeds: int) -> None:
    """DIN with each ablation code part, ``seeds`` seeds, merged into the results at
    ``path``."""
    import torch
    from ablations import ABLATION_CODES, ensure_ablation_codes

    from lgsid_pipeline.defs.recommenders import CtrTrainingConfig
    from lgsid_pipeline.recommenders.config import TrainConfig
    from lgsid_pipeline.recommenders.datasets import load_ctr_data
    from lgsid_pipeline.stages.discriminative import train_variant_seeds, variant_codes
    from lgsid_pipeline.warehouse import Warehouse

    torch.set_num_threads(1)
    out = json.loads(path.read_text())
    ensure_ablation_codes(list(REAL_CITIES), list(REAL_CITIES))
    warehouse = Warehouse()
    train = TrainConfig(**{k: v for k, v in TRAINING.items() if k != "dim"})
    top_k = CtrTrainingConfig().top_k
    began = time.perf_counter()
    for city in REAL_CITIES:
        data = load_ctr_data(warehouse, city)
        entry = out["cities"][city].setdefault("ablations", {}).setdefault(ABLATION_BACKBONE, {})
        for name in ABLATION_CODES:
            codes, sizes = variant_codes(warehouse, city, name, data)
            results, _ = train_variant_seeds(
                data, codes, sizes, ABLATION_BACKBONE, train, range(seeds), TRAINING["dim"], top_k
            )
            entry[name] = {
                k: results[k]
                for k in (
                    "auc",
                    "auc_ci95",
                    "auc_seeds",
                    "seeds",
                    "interval",
                    "logloss",
                    "train_seconds",
                )
            }
            print(
                f"[{time.perf_counter() - began:6.0f}s] {city} {ABLATION_BACKBONE}/{name}: "
                f"AUC {results['auc']:.4f} {results['auc_ci95']}",
                flush=True,
            )
            out["ablations_provenance"] = provenance(
                {
                    "cities": list(REAL_CITIES),
                    "backbone": ABLATION_BACKBONE,
                    "seeds": seeds,
                    "training": TRAINING,
                    "codes": list(ABLATION_CODES),
                }
            )
            path.write_text(json.dumps(out, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="only add the DIN ablations to the existing results",
    )
    parser.add_argument(
        "--ablation-seeds",
        type=int,
        default=SEEDS[ABLATION_BACKBONE],
        help="seeds per DIN ablation (default: as the main table)",
    )
    args = parser.parse_args()
    isolated_home("lgsid-disc-")
    if args.ablations:
        run_ablations(RESULTS / "discriminative.json", args.ablation_seeds)
        return

    from lgsid_pipeline.report import city_report
    from lgsid_pipeline.runner import get_instance, materialize
    from lgsid_pipeline.warehouse import Warehouse

    ensure_item_embeddings()
    warehouse = Warehouse()
    instance = get_instance()
    if not all(
        warehouse.has_table("semantic_ids", c, kind)
        for c in REAL_CITIES
        for kind in TOKENIZER_KINDS
    ):
        done = materialize(
            list(REAL_CITIES),
            instance=instance,
            select=f"{TOKENIZER_SELECTION},{SEMANTIC_IDS_SELECTION}",
        )
        if not all(r.success for r in done):
            sys.exit(f"tokenization failed: {done}")
    started = time.perf_counter()
    results = materialize(
        list(REAL_CITIES),
        instance=instance,
        run_config=RUN_CONFIG,
        select="recommender_datasets," + ",".join(BACKBONES) + ",evaluation_report",
        parallel=2,
    )
    seconds = time.perf_counter() - started
    if not all(r.success for r in results):
        print(json.dumps([r.__dict__ for r in results], indent=2))
        sys.exit(1)
    cities = {}
    for city in REAL_CITIES:
        table = city_report(warehouse, city)["discriminative"]
        if table.get("seeds") != SEEDS:
            sys.exit(
                f"{city}: reports were trained with seeds {table.get('seeds')}, expected {SEEDS}"
            )
        cities[city] = {
            "split": table["split"],
            "auc": table["auc"],
            "auc_ci95": table["auc_ci95"],
            "seeds": table["seeds"],
            "interval": table["interval"],
            "logloss": table["logloss"],
            "train_seconds": table["train_seconds"],
        }
    out = {
        "cities": cities,
        "stage_seconds": seconds,
        "dataset": DATASET,
        "training": TRAINING,
        "seeds": SEEDS,
        "runs": [r.__dict__ for r in results],
        "machine": {"cpus": os.cpu_count()},
        "provenance": provenance(
            {"cities": list(REAL_CITIES), "run_config": RUN_CONFIG, "seeds": SEEDS}
        ),
    }
    (RESULTS / "discriminative.json").write_text(json.dumps(out, indent=2) + "\n")
    for city, entry in cities.items():
        print(
            f"\n{city} (split {entry['split']['t1']} / {entry['split']['t2']}; test AUC [95% CI])"
        )
        print(f"{'backbone':8s} {'seeds':>5s} " + " ".join(f"{v:>24s}" for v in VARIANTS))
        for backbone, row in entry["auc"].items():
            ci = entry["auc_ci95"][backbone]
            print(
                f"{backbone:8s} {entry['seeds'][backbone]:5d} "
                + " ".join(
                    f"{row[v]:.4f} [{ci[v][0]:.4f}, {ci[v][1]:.4f}]".rjust(24) for v in VARIANTS
                )
            )


if __name__ == "__main__":
    main()
