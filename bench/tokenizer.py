"""Tokenizer benchmark on the real cities: LGSID vs RQ-KMeans vs RQ-VAE.

Usage: .venv/bin/python bench/tokenizer.py   (writes bench/results/tokenizer.json)
Needs the aligned embeddings of new-york and tokyo: with LGSID_BENCH_HOME pointing at a home
that has them (e.g. left by an earlier run) they are reused, otherwise the ingest and
alignment stages run first (~20 minutes). The tokenizers and semantic IDs are materialized
through Dagster with the asset defaults (codebooks 64-64-64, fitted from scratch); then each
tokenizer is
retrained twice: warm (the pipeline's retrain: started from the champion, another seed)
and cold (another seed from scratch, codewords Hungarian-matched), and code churn is measured.
Last, the whole lineage is retrained as the weekly schedule does (``runner.retrain``: reward
model, geo pairs, aligned encoder with another seed, embeddings, warm-started tokenizers,
semantic IDs), and ``churn_after_encoder_retrain`` is the share of items whose code changed.
That leaves the retrained models as the home's champions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from common import (
    ALIGNMENT_RUN_CONFIG,
    REAL_CITIES,
    ensure_item_embeddings,
    isolated_home,
    write_results,
)

from lgsid_pipeline.catalog import (
    TOKENIZER_KINDS,
    semantic_ids_asset,
    tokenizer_asset,
    tokenizer_model,
)

ENCODER_RETRAIN_SEED = 1

KINDS = {kind: (tokenizer_asset(kind), semantic_ids_asset(kind)) for kind in TOKENIZER_KINDS}


def token_digests() -> dict[str, dict[str, str]]:
    """Per kind and city, the SHA-256 of the published codes (item id and its tokens, in id
    order): equal digests mean the same tokens."""
    import hashlib

    from lgsid_pipeline.tokenizer import level_columns
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()
    out: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        for city in REAL_CITIES:
            table = warehouse.read_table("semantic_ids", city, kind).sort_values("item_id")
            rows = table[["item_id", *level_columns(3), "dedup"]].astype(str).agg("|".join, axis=1)
            digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            out.setdefault(kind, {})[city] = digest
    return out


def retrain_churn(kind: str, seed: int = 1) -> dict[str, float]:
    """Share of items whose tokens change when the champion is refitted on the same items and
    embeddings it was fitted on (every city it covers), warm and cold."""
    import numpy as np
    import pandas as pd

    from lgsid_pipeline.registry import champion_folder
    from lgsid_pipeline.tokenizer import TOKENIZERS, Tokenizer, TokenizerConfig
    from lgsid_pipeline.tokenizer.semantic_ids import aligned_embeddings
    from lgsid_pipeline.warehouse import Warehouse

    champion = Tokenizer.load(champion_folder(tokenizer_model(kind)))
    warehouse = Warehouse()
    parts = []
    for city in champion.cities:  # refit on exactly what the champion was fitted on
        items = warehouse.read_table("items", city)
        vectors, _ = aligned_embeddings(
            items, warehouse.read_arrow("item_embeddings", city, champion.embedding_part)
        )
        parts.append((items, vectors))
    items = pd.concat([p[0] for p in parts], ignore_index=True)
    vectors = np.concatenate([p[1] for p in parts])
    before = champion.assign(items, vectors)
    config = TokenizerConfig(**{**champion.config.__dict__, "seed": seed})
    out = {}
    for name, warm in (("warm", True), ("cold_matched", False)):
        retrained = TOKENIZERS[kind](config).fit(items, vectors, previous=champion, warm_start=warm)
        after = retrained.assign(items, vectors)
        out[f"churn_{name}"] = float(np.mean(np.any(before != after, axis=1)))
        out[f"churn_{name}_by_level"] = np.mean(before != after, axis=0).round(4).tolist()
        out[f"refit_seconds_{name}"] = retrained.fit_seconds
    return out


def encoder_retrain_churn(seed: int = ENCODER_RETRAIN_SEED) -> dict:
    """Retrain the whole lineage with the aligned encoder on another seed; per tokenizer kind
    and city, the share of items whose code (tokens) changed, and the versions involved."""
    import numpy as np

    from lgsid_pipeline.registry import champion_folder
    from lgsid_pipeline.runner import get_instance, retrain
    from lgsid_pipeline.tokenizer import Tokenizer, level_columns
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()

    def tokens(kind: str, city: str):
        table = warehouse.read_table("semantic_ids", city, kind).set_index("item_id")
        return table[level_columns(3)].sort_index()

    before = {kind: {city: tokens(kind, city) for city in REAL_CITIES} for kind in KINDS}
    ops = {
        name: {"config": dict(entry["config"])}
        for name, entry in ALIGNMENT_RUN_CONFIG["ops"].items()
    }
    ops["aligned_encoder"]["config"]["seed"] = seed
    config = {"ops": ops}
    started = time.perf_counter()
    results, step = retrain(instance=get_instance(), run_config=config)
    seconds = time.perf_counter() - started
    if step.state != "done":
        raise RuntimeError(f"retrain {step.state}: {step.reason}; runs {results}")
    out: dict = {
        "seconds": round(seconds, 1),
        "aligned_encoder_seed": seed,
        "run_config": config,
        "runs": [r.__dict__ for r in results],
        "kinds": {},
    }
    for kind in KINDS:
        fitted = Tokenizer.load(champion_folder(tokenizer_model(kind)))
        per_city = {}
        for city in REAL_CITIES:
            old, new = before[kind][city], tokens(kind, city)
            common = old.index.intersection(new.index)
            changed = old.loc[common].to_numpy() != new.loc[common].to_numpy()
            per_city[city] = {
                "items": len(common),
                "churn": float(np.mean(changed.any(axis=1))),
                "churn_by_level": changed.mean(axis=0).round(4).tolist(),
            }
        weights = [per_city[c]["items"] for c in REAL_CITIES]
        out["kinds"][kind] = {
            "churn": float(
                np.average([per_city[c]["churn"] for c in REAL_CITIES], weights=weights)
            ),
            "cities": per_city,
            "tokenizer_version": fitted.version,
            "encoder_version": fitted.encoder_version,
            "warm_started": fitted.warm_started,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--digests",
        metavar="FILE",
        help="only write the token digests of the home's published codes to FILE and stop",
    )
    parser.add_argument(
        "--fit-only",
        metavar="FILE",
        help="stop after the from-scratch fit: write its token digests and per-city figures "
        "to FILE (not bench/results)",
    )
    args = parser.parse_args()
    isolated_home("lgsid-tok-")
    if args.digests:
        Path(args.digests).write_text(json.dumps(token_digests(), indent=2))
        return

    from lgsid_pipeline.report import city_report
    from lgsid_pipeline.reports import ReportStore
    from lgsid_pipeline.runner import get_instance, materialize
    from lgsid_pipeline.tokenizer import SUMMARY_KEYS
    from lgsid_pipeline.warehouse import Warehouse

    started = time.perf_counter()
    alignment_runs = ensure_item_embeddings()
    alignment_seconds = time.perf_counter() - started
    select = ",".join(name for pair in KINDS.values() for name in pair)
    started = time.perf_counter()
    cold = {"ops": {model: {"config": {"warm_start": False}} for model, _ in KINDS.values()}}
    results = materialize(
        list(REAL_CITIES), select=select, instance=get_instance(), run_config=cold
    )
    stage_seconds = time.perf_counter() - started
    if not all(r.success for r in results):
        print(json.dumps([r.__dict__ for r in results], indent=2))
        sys.exit(1)
    warehouse = Warehouse()
    cities: dict[str, dict] = {}
    for city in REAL_CITIES:
        reports = city_report(warehouse, city)["tokenizers"]
        cities[city] = {
            "tokenizers": {
                kind: {**{k: reports[kind][k] for k in SUMMARY_KEYS}, "all_metrics": reports[kind]}
                for kind in KINDS
            }
        }
    digests = token_digests()
    if args.fit_only:
        Path(args.fit_only).write_text(
            json.dumps({"token_digests": digests, "cities": cities}, indent=2, default=str)
        )
        return
    churn = {}
    for kind in KINDS:
        churn[kind] = retrain_churn(kind)
        print(kind, churn[kind], flush=True)
    store = ReportStore(warehouse.home)
    global_reports = {kind: store.read(store.tokenizer(kind)) for kind in KINDS}
    encoder_retrain = encoder_retrain_churn()
    print(
        "after an encoder retrain:",
        {k: round(v["churn"], 4) for k, v in encoder_retrain["kinds"].items()},
        flush=True,
    )
    out = {
        "cities": cities,
        "token_digests": digests,
        "retrain": churn,
        "churn_after_encoder_retrain": {k: v["churn"] for k, v in encoder_retrain["kinds"].items()},
        "encoder_retrain": encoder_retrain,
        "fit_seconds": {k: v["fit_seconds"] for k, v in global_reports.items()},
        "stage_seconds": stage_seconds,
        "alignment_seconds_if_run": alignment_seconds if alignment_runs else None,
        "codebook_sizes": [64, 64, 64],
        "runs": [r.__dict__ for r in results],
        "machine": {"cpus": os.cpu_count()},
    }
    write_results(
        "tokenizer",
        out,
        {
            "cities": REAL_CITIES,
            "kinds": KINDS,
            "materialize_run_config": cold,
            "retrain_seed": 1,
            "encoder_retrain_seed": ENCODER_RETRAIN_SEED,
        },
    )
    table = [f"{'city':10s} {'tokenizer':9s} " + " ".join(f"{k:>18s}" for k in SUMMARY_KEYS)]
    for city, entry in cities.items():
        for kind, figures in entry["tokenizers"].items():
            table.append(
                f"{city:10s} {kind:9s} "
                + " ".join(
                    f"{figures[k]:>18.3f}"
                    if isinstance(figures[k], float)
                    else f"{figures[k]!s:>18s}"
                    for k in SUMMARY_KEYS
                )
            )
    print("\n".join(table))


if __name__ == "__main__":
    main()
