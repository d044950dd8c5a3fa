"""Shared set-up of the benchmarks: an isolated LGSID/Dagster home and the real cities."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from lgsid_pipeline.catalog import (
    BACKBONES,
    CITY_CODE_ASSETS,
    SEMANTIC_ID_ASSETS,
    TOKENIZER_ASSETS,
    TOKENIZER_KINDS,
)

REAL_CITIES = {
    "new-york": ("gowalla", "gowalla_nyc"),
    "tokyo": ("foursquare-tsmc", "foursquare_tky/dataset_TSMC2014_TKY_valtest.txt"),
}
RESULTS = Path(__file__).parent / "results"


# What the alignment stage runs with in the benchmarks (smaller samples than the asset
# defaults, to stay well inside the 30-minute budget on two cores).
ALIGNMENT_RUN_CONFIG = {
    "ops": {
        "geo_negatives": {"config": {"max_anchors": 2000}},
        "geo_pairs": {"config": {"n_anchors": 1500}},
        "aligned_encoder": {
            "config": {
                "steps": 150,
                "batch_size": 32,
                "max_dc_triples": 1500,
                "max_gc_triples": 1500,
            }
        },
    },
}

# The recommender stages in the benchmarks: the discriminative backbones' datasets and
# training, and the generative models (sized for two CPU cores; see the bench scripts).
DATASET = {
    "max_train_positives": 10000,
    "max_eval_positives": 3000,
    "short_len": 20,
    "long_len": 100,
}
TRAINING = {"epochs": 4, "patience": 1, "batch_size": 512, "lr": 2e-3, "dim": 32}
# The generative stage on two cores: budget in optimizer steps. The models read the history
# one position per check-in (history_encoding "items"), a quarter of the per-token step's
# time at the same validation Hit@10, so 1,200 steps cost what 300 did; validation Hit@10
# of TIGER alone rose from 0.28 to 0.42 (Tokyo) and 0.07 to 0.12 (New York) with them
# (bench/results/generative_speed.json). The validation sample's halves fit the re-ranker
# (800 examples) and gate the models; 2,500 test examples give Hit@10 intervals near +-0.02
# (the paired difference to floor (b) is much narrower).
GENERATIVE = {
    "d_model": 64,
    "n_layers": 2,
    "dropout": 0.0,
    "steps": 1200,
    "eval_every": 150,
    "patience": 2,
    "batch_size": 128,
    "lr": 2e-3,
    "beam_size": 20,
    "max_history": 20,
    "history_encoding": "items",
    "history_window": 200,
    "max_train_examples": 40_000,
    "max_valid_eval": 1600,
    "early_stop_examples": 500,
    "max_test_examples": 2500,
}
ONE_TORCH_THREAD = {"resources": {"workspace": {"config": {"torch_threads": 1}}}}
DISCRIMINATIVE_RUN_CONFIG = {
    **ONE_TORCH_THREAD,
    "ops": {
        "recommender_datasets": {"config": DATASET},
        **{b: {"config": TRAINING} for b in BACKBONES},
    },
}
GENERATIVE_RUN_CONFIG = {
    **ONE_TORCH_THREAD,
    "ops": {name: {"config": GENERATIVE} for name in ("tiger", "onerec", "generative_baseline")},
}


def isolated_home(prefix: str) -> Path:
    """Point LGSID_HOME and DAGSTER_HOME at a new temporary folder (call before imports).

    With ``LGSID_BENCH_HOME`` set, that folder is used instead and kept, so a later benchmark
    reuses what an earlier one materialized (the aligned embeddings take ~20 minutes).
    """
    kept = os.environ.get("LGSID_BENCH_HOME")
    scratch = Path(kept) if kept else Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["LGSID_HOME"] = str(scratch / "home")
    os.environ["DAGSTER_HOME"] = str(scratch / "dagster")
    use_instance_settings(scratch / "dagster")
    return scratch


def use_instance_settings(dagster_home: Path) -> None:
    """Give a bench's Dagster home the instance settings of the checkout being measured
    (``dagster_home/dagster.yaml``), also when the home was kept from an earlier run."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).parents[1] / "dagster_home" / "dagster.yaml", dagster_home)


def register_real_cities() -> list:
    """Register the real cities from the shared data folder; return their configs."""
    from lgsid_pipeline.cities import CityConfig, CityRegistry
    from lgsid_pipeline.config import shared_data_dir

    registry = CityRegistry()
    configs = [
        CityConfig(slug=slug, source=source, path=str(shared_data_dir() / rel))
        for slug, (source, rel) in REAL_CITIES.items()
    ]
    for config in configs:
        registry.add(config)
    return configs


def ensure_item_embeddings() -> list[str]:
    """Ingest the real cities and run the alignment stage unless the home already has the
    aligned embeddings of every real city; returns the Dagster run ids it started."""
    from lgsid_pipeline.runner import get_instance, materialize
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()
    if all(warehouse.has_table("item_embeddings", c, "aligned") for c in REAL_CITIES):
        return []
    register_real_cities()
    results = materialize(
        list(REAL_CITIES),
        select="*item_embeddings",
        instance=get_instance(),
        run_config=ALIGNMENT_RUN_CONFIG,
    )
    failed = [r for r in results if not r.success]
    if failed:
        raise RuntimeError(f"alignment stage failed: {failed}")
    return [r.run_id for r in results]


TOKENIZER_SELECTION = ",".join(TOKENIZER_ASSETS)
SEMANTIC_IDS_SELECTION = ",".join(SEMANTIC_ID_ASSETS)
CITY_CODES_SELECTION = ",".join(CITY_CODE_ASSETS)


def ensure_semantic_ids(cities: list[str] | None = None) -> list[str]:
    """Ingest, align and tokenize the real cities unless the home has every code variant of
    each; then give each other city of ``cities`` (registered before) its codes from the
    frozen champion encoder and tokenizers (a backfill: no global model is retrained).
    Returns the Dagster run ids."""
    from lgsid_pipeline.runner import get_instance, materialize
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()

    def missing(names: list[str]) -> list[str]:
        return [
            c
            for c in names
            if not all(
                warehouse.has_table("semantic_ids", c, variant) for variant in TOKENIZER_KINDS
            )
        ]

    runs = ensure_item_embeddings()
    # the tokenizers fit on today's embeddings
    plans = [
        (missing(list(REAL_CITIES)), f"{TOKENIZER_SELECTION},{SEMANTIC_IDS_SELECTION}"),
        (missing([c for c in cities or [] if c not in REAL_CITIES]), CITY_CODES_SELECTION),
    ]
    for todo, select in plans:
        if not todo:
            continue
        results = materialize(
            todo, select=select, instance=get_instance(), run_config=ALIGNMENT_RUN_CONFIG
        )
        failed = [r for r in results if not r.success]
        if failed:
            raise RuntimeError(f"tokenization stage failed: {failed}")
        runs += [r.run_id for r in results]
    return runs


def land_new_venues(home: Path, city: str, tag: str, n: int, seed: int = 7) -> list[str]:
    """Land ``n`` new venues for ``city`` in ``items-<tag>.parquet``: more branches of its
    real venues (their names and categories, no brand column, like the source) about 150 m
    away, under new ids ``<tag>-NNNN``; returns the ids."""
    import numpy as np

    from lgsid_pipeline.warehouse import Warehouse

    items = Warehouse().read_table("items", city)
    rng = np.random.default_rng(seed)
    sample = items.iloc[rng.choice(len(items), size=n, replace=False)]
    landed = sample[["name", "category", "latitude", "longitude"]].copy()
    landed.insert(0, "item_id", [f"{tag}-{i:04d}" for i in range(n)])
    landed["latitude"] += rng.normal(0, 0.0015, n)
    landed["longitude"] += rng.normal(0, 0.0015, n)
    folder = home / "landing" / city
    folder.mkdir(parents=True, exist_ok=True)
    landed.to_parquet(folder / f"items-{tag}.parquet", index=False)
    return landed["item_id"].tolist()


def provenance(config: dict) -> dict:
    """What produced a results file: commit (``+dirty`` when the tree has changes), time,
    command line, the full config, and the versions of the packages that matter."""
    import sys
    from datetime import UTC, datetime
    from importlib.metadata import version

    from lgsid_pipeline.provenance import git_sha

    sha = git_sha()
    packages = ("torch", "transformers", "dagster", "mlflow", "numpy", "scikit-learn", "duckdb")
    return {
        "git_sha": sha,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": config,
        "versions": {
            "python": sys.version.split()[0],
            **{name: version(name) for name in packages},
        },
        # timings from a loaded machine are not comparable: the 1/5/15-minute load
        # averages when the results were written say how busy it was
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]},
    }


def write_results(name: str, results: dict, config: dict) -> Path:
    """Write ``bench/results/<name>.json`` with the provenance of this run added."""
    import json

    target = RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    out = {**results, "provenance": provenance(config)}
    target.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return target
