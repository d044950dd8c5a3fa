"""Generative benchmark on the real cities and the standard STHGCN split.

For each city, on the same examples: the floors (a) popularity within 2 km of the last
check-in and (b) the user's own most visited items, then list (a); SASRec on item ids (c);
TIGER and the OneRec-style decoder on RQ-KMeans, RQ-VAE and LGSID codes, each as the model
alone and with the history-aware ranking; the served choice of the champion gate; and
ablations of the re-ranking (without the model's, the history's or the distance features)
and of the codes. TIGER and
SASRec are means over seeds with a 95% interval over seeds and test examples (a joint
bootstrap); OneRec and the ablations use one seed with a bootstrap over test examples (the
JSON says which).

Settings are chosen on validation only: early stopping on part of the validation sample, the
re-ranker on its even rows (``tune``), the gate on its odd rows (``gate``). The test sample is
scored once per trained model.

Usage: LGSID_BENCH_HOME=... .venv/bin/python bench/generative.py [--cities ...] [--seeds N]
(writes bench/results/generative.json after every city). Runs after bench/prepare.py; the
STHGCN city is ingested, embedded and coded with the frozen champion models if missing.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ablations import ABLATION_CODES, ensure_ablation_codes
from common import (
    GENERATIVE,
    REAL_CITIES,
    RESULTS,
    ensure_semantic_ids,
    isolated_home,
    provenance,
)

from lgsid_pipeline.catalog import CODE_VARIANTS

STHGCN = "sthgcn-nyc"  # the city slug
STHGCN_KEY = "sthgcn_nyc"  # its entry in generative.json, beside "cities"
STHGCN_DATA = "foursquare_nyc_sthgcn"
PUBLISHED = {
    "sthgcn": {
        "acc@1": 0.2734,
        "acc@5": 0.5361,
        "acc@10": 0.6244,
        "mrr": 0.3915,
        "note": "best run, SIGIR 2023 (mean of 10 runs: 0.2625 / 0.5226 / "
        "0.6117 / 0.3798); 1,347 targets",
    }
}
VARIANT_ORDER = tuple(reversed(CODE_VARIANTS))  # trained in this order within each seed
HIT_METRICS = ("hit@5", "hit@10", "ndcg@5", "ndcg@10")
ACC_METRICS = ("acc@1", "acc@5", "acc@10", "mrr")
# SASRec gets the same step budget and batch as the generative models (set in run_city).
SASREC = {
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 2,
    "dropout": 0.1,
    "max_history": 50,
    "eval_every": 150,
    "patience": 2,
    "max_valid_eval": 600,
    "loss_positions": 1,
}


def log(message: str, began: float) -> None:
    print(f"[{time.perf_counter() - began:7.0f}s] {message}", flush=True)


def register_sthgcn() -> None:
    from lgsid_pipeline.cities import CityConfig, CityRegistry
    from lgsid_pipeline.config import shared_data_dir

    registry = CityRegistry()
    if STHGCN not in {c.slug for c in registry.all()}:
        registry.add(
            CityConfig(
                slug=STHGCN, source="foursquare-sthgcn", path=str(shared_data_dir() / STHGCN_DATA)
            )
        )


def city_splits(warehouse, city: str, catalogue, settings) -> dict:
    """Examples of ``city``: a time split by quantiles (as the recommender datasets), or for
    the STHGCN city its files' split and protocol (targets: last check-in of each valid /
    test trajectory; the test set is used whole)."""
    from lgsid_pipeline.recommenders.config import DatasetConfig
    from lgsid_pipeline.recommenders.datasets import file_split_times, split_times
    from lgsid_pipeline.recommenders.next_item import build_next_item_examples
    from lgsid_pipeline.recommenders.protocol import trajectory_last_targets
    from lgsid_pipeline.stages.generative import sample_splits

    events = catalogue.events
    t1, t2 = split_times(events["ts"], DatasetConfig(), file_split_times(events))
    users = events["user_id"].astype(str).to_numpy()
    items = events["item_index"].to_numpy()
    splits = build_next_item_examples(users, items, events["ts"], t1, t2, settings.history_window)
    if city == STHGCN:
        for split in ("valid", "test"):
            splits[split] = trajectory_last_targets(
                users,
                items,
                events["ts"],
                events["trajectory_id"],
                events["split"],
                split,
                settings.history_window,
            )
    return sample_splits(splits, settings)


def summarize(ranks, metrics, interval: str, multi_seed: bool, floor_b=None) -> dict:
    """Seed means with the interval of ``interval``; with ``floor_b`` (its test ranks) also
    the paired difference to floor (b) on the same examples (``vs_floor_b``)."""
    from lgsid_pipeline.metrics.intervals import paired_difference, summarize_ranks

    out = summarize_ranks(ranks, metrics, (interval,))
    out["interval"] = (
        "bootstrap over seeds and test examples"
        if multi_seed and out["seeds"] > 1
        else "bootstrap over test examples"
    )
    if floor_b is not None:
        out["vs_floor_b"] = {"metric": interval, **paired_difference(ranks, floor_b, interval)}
    return out


@dataclass
class CitySetup:
    """What every model of one city is trained and scored on."""

    city: str
    warehouse: Any
    settings: Any
    catalogue: Any
    splits: dict
    floors: dict
    metrics: tuple[str, ...]
    interval: str

    @property
    def floor_b(self):
        return self.floors["user_history_2km"]["test"]


def city_setup(city: str, quick: bool, began: float) -> CitySetup:
    """The city's stage settings, catalogue, example samples and floor ranks."""
    from lgsid_pipeline.recommenders.config import GenerativeStageConfig
    from lgsid_pipeline.stages.generative import city_catalogue, floor_ranks
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()
    stage = dict(GENERATIVE)
    if city == STHGCN:
        stage["max_test_examples"] = 0  # the protocol's whole test set
    if quick:
        stage |= {
            "steps": 60,
            "eval_every": 30,
            "max_train_examples": 2000,
            "max_valid_eval": 100,
            "max_test_examples": 200,
        }
    settings = GenerativeStageConfig(**stage)
    catalogue = city_catalogue(warehouse, city)
    splits = city_splits(warehouse, city, catalogue, settings)
    sizes = {name: int(len(t)) for name, (_, t) in splits.items()}
    log(f"{city}: {len(catalogue.item_ids)} items, examples {sizes}", began)
    return CitySetup(
        city,
        warehouse,
        settings,
        catalogue,
        splits,
        floor_ranks(catalogue, splits),
        ACC_METRICS if city == STHGCN else HIT_METRICS,
        "acc@10" if city == STHGCN else "hit@10",
    )


def code_ablations(
    setup: CitySetup, names: list[str], out: dict, began: float, save: Callable[[dict], None]
) -> None:
    """TIGER (seed 0) on each ablation code part of ``names`` (bench/ablations.py), alone
    and re-ranked, into ``out["ablations"]``: what G-DPO, its similarity regulariser and the
    geographic primary level buy."""
    from lgsid_pipeline.stages.generative import city_codes, train_variant

    for name in names:
        codes, _ = city_codes(setup.warehouse, setup.city, name, setup.catalogue.item_ids)
        run = train_variant("tiger", codes, setup.catalogue, setup.splits, setup.settings, seed=0)
        for ranking, key in (("plain", "tiger"), ("blended", "tiger_history")):
            out.setdefault("ablations", {})[f"{key}_{name}"] = summarize(
                run.ranks[ranking]["test"], setup.metrics, setup.interval, False, setup.floor_b
            )
        log(
            f"{setup.city}: ablation {name}: plain "
            f"{out['ablations'][f'tiger_{name}'][setup.interval]:.4f}, re-ranked "
            f"{out['ablations'][f'tiger_history_{name}'][setup.interval]:.4f}",
            began,
        )
        save(out)


def served_entry(setup: CitySetup, candidates: dict) -> dict:
    """What the pipeline would serve: the seed-0 TIGER variant with the best gate Hit@10, if
    it beats floor (b) on the gate rows; else floor (b) itself."""
    import numpy as np

    from lgsid_pipeline.recommenders.serving import champion_gate

    best = max(candidates, key=lambda v: candidates[v].gate_hit10)
    floor_gate = setup.floors["user_history_2km"]["gate"]
    decision = champion_gate(
        candidates[best].gate_hit10, float(np.mean((floor_gate >= 0) & (floor_gate < 10))), None
    )
    ranks = candidates[best].ranks["blended"]["test"] if decision.promote else setup.floor_b
    served = summarize(ranks, setup.metrics, setup.interval, False, setup.floor_b)
    interval = setup.interval
    return {
        "model": f"tiger/{best} + history" if decision.promote else "floor/user_history_2km",
        interval: served[interval],
        f"{interval}_ci95": served[f"{interval}_ci95"],
        "vs_floor_b": served["vs_floor_b"],
        "gate": decision.as_dict(),
    }


def run_city(
    city: str,
    seeds: int,
    began: float,
    quick: bool,
    kinds: list[str],
    save: Callable[[dict], None],
    reuse: dict | None = None,
) -> dict:
    """Every model and floor of one city; ``save`` gets the entry after each model, so an
    interrupted run keeps what it measured. ``reuse``: that city's entry of an earlier run
    with the same settings, whose SASRec figures are kept (``--resume``)."""
    import numpy as np

    from lgsid_pipeline.metrics.intervals import target_ranks
    from lgsid_pipeline.recommenders.config import SasrecConfig
    from lgsid_pipeline.recommenders.sasrec import recommend_sasrec, train_sasrec
    from lgsid_pipeline.stages.generative import city_codes, train_variant

    setup = city_setup(city, quick, began)
    warehouse, settings, catalogue = setup.warehouse, setup.settings, setup.catalogue
    splits, floors, metrics, interval = setup.splits, setup.floors, setup.metrics, setup.interval
    sizes = {name: int(len(t)) for name, (_, t) in splits.items()}
    out: dict = {"examples": sizes, "floors": {}, "train_seconds": {}}
    for name, ranks in floors.items():
        out["floors"][name] = summarize(ranks["test"], metrics, interval, False)
    log(
        f"{city}: floors " + ", ".join(f"{n} {m[interval]:.4f}" for n, m in out["floors"].items()),
        began,
    )

    sasrec = SasrecConfig(
        **SASREC, steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr
    )
    if quick:
        sasrec = SasrecConfig(
            **{**asdict(sasrec), "steps": 60, "eval_every": 30, "max_valid_eval": 100}
        )
    floor_b = setup.floor_b
    kept = (reuse or {}).get("floors", {}).get("sasrec")
    if kept and reuse["examples"] == sizes and kept["seeds"] == seeds:
        out["floors"]["sasrec"] = kept  # --resume: the same examples and settings
        out["train_seconds"]["sasrec"] = reuse["train_seconds"]["sasrec"]
    else:
        sasrec_ranks, started = [], time.perf_counter()
        for seed in range(seeds):
            result = train_sasrec(
                SasrecConfig(**{**asdict(sasrec), "seed": seed}), len(catalogue.item_ids), splits
            )
            items, _ = recommend_sasrec(result, splits["test"][0], 20)
            sasrec_ranks.append(target_ranks(items, splits["test"][1]))
        out["floors"]["sasrec"] = summarize(
            np.stack(sasrec_ranks), metrics, interval, True, floor_b
        )
        out["train_seconds"]["sasrec"] = (time.perf_counter() - started) / seeds
    log(f"{city}: sasrec {out['floors']['sasrec'][interval]:.4f}", began)

    save(out)
    gate_candidates = {}
    for kind in kinds:
        n_seeds = seeds if kind == "tiger" else 1
        out[kind], out[f"{kind}_history"] = {}, {}
        runs: dict[str, list] = {variant: [] for variant in VARIANT_ORDER}
        # seed by seed, so an interrupted run has every variant at the same number of seeds
        for seed in range(n_seeds):
            for variant in VARIANT_ORDER:
                codes, _ = city_codes(warehouse, city, variant, catalogue.item_ids)
                run = train_variant(
                    kind,
                    codes,
                    catalogue,
                    splits,
                    settings,
                    seed=seed,
                    ablations=(variant == "lgsid" and seed == 0),
                )
                runs[variant].append(run)
                hits = {
                    name: float(np.mean((r["test"] >= 0) & (r["test"] < 10)))
                    for name, r in run.ranks.items()
                }
                log(
                    f"{city}: {kind}/{variant} seed {seed}: best step "
                    f"{run.result.best_step}, test top-10 {hits} ({run.train_seconds:.0f}s "
                    f"train, {run.inference_seconds:.0f}s re-ranking)",
                    began,
                )
                done = runs[variant]
                for ranking, key in (("plain", kind), ("blended", f"{kind}_history")):
                    out[key][variant] = summarize(
                        np.stack([r.ranks[ranking]["test"] for r in done]),
                        metrics,
                        interval,
                        True,
                        floor_b,
                    )
                out["train_seconds"][f"{kind}/{variant}"] = float(
                    np.mean([r.train_seconds for r in done])
                )
                if variant == "lgsid" and seed == 0:
                    out.setdefault("ablations", {})
                    for ranking in ("no_model", "no_history", "no_distance"):
                        out["ablations"][f"{kind}_lgsid_history_{ranking}"] = summarize(
                            run.ranks[ranking]["test"], metrics, interval, False, floor_b
                        )
                if kind == "tiger" and seed == 0:
                    gate_candidates[variant] = run
                save(out)
            if kind == "tiger" and seed == 0:
                out["served"] = served_entry(setup, gate_candidates)
                log(f"{city}: served {out['served']}", began)
                save(out)
    coded = [
        name
        for name in ABLATION_CODES  # bench/ablations.py makes the others
        if warehouse.has_table("semantic_ids", city, name)
    ]
    code_ablations(setup, coded, out, began, save)
    return out


def sthgcn_entry(entry: dict) -> dict:
    """The STHGCN split's entry: SASRec beside the floors, and the published figures."""
    return {**entry, "sasrec": entry["floors"].get("sasrec"), "published": PUBLISHED}


def merge_results(parts: list[Path], out: Path, note: str = "") -> None:
    """One results file from runs of disjoint cities (each keeps its own provenance), with
    an optional ``note`` on how the runs were made."""
    merged: dict = {"cities": {}, "provenance": {"merged_from": {}}}
    if note:
        merged["provenance"]["note"] = note
    for part in parts:
        data = json.loads(part.read_text())
        merged["cities"].update(data.get("cities", {}))
        for key in (STHGCN, STHGCN_KEY):  # runs before the key was named keep the slug
            if key in data:
                merged[STHGCN_KEY] = sthgcn_entry(data[key])
        cities = [
            *data.get("cities", {}),
            *([STHGCN] if STHGCN in data or STHGCN_KEY in data else []),
        ]
        merged["provenance"]["merged_from"][",".join(cities)] = data["provenance"]
    first = next(iter(merged["provenance"]["merged_from"].values()))
    merged["provenance"].update(
        {k: first[k] for k in ("git_sha", "created_at", "command", "config")}
    )
    out.write_text(json.dumps(merged, indent=2) + "\n")


def add_code_ablations(args: argparse.Namespace, results: dict, began: float) -> None:
    """TIGER on ``args.code_ablations`` for each city of ``args.cities``, added to the
    entries already in ``results`` (written back to ``args.out``)."""
    for city in args.cities:
        entry = results[STHGCN_KEY] if city == STHGCN else results["cities"][city]

        def save(entry: dict, city: str = city) -> None:
            results.setdefault("provenance", {})["code_ablations"] = provenance(
                {"stage": GENERATIVE, "cities": args.cities, "codes": args.code_ablations}
            )
            args.out.write_text(json.dumps(results, indent=2) + "\n")

        code_ablations(city_setup(city, args.quick, began), args.code_ablations, entry, began, save)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities", nargs="+", default=["tokyo", "new-york", STHGCN])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--kinds", nargs="+", default=["tiger", "onerec"], choices=["tiger", "onerec"]
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "generative.json")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the SASRec figures of --out's cities when the settings match",
    )
    parser.add_argument(
        "--code-ablations",
        nargs="+",
        choices=list(ABLATION_CODES),
        help="only train TIGER on these ablation codes, into --out's cities",
    )
    parser.add_argument("--note", default="", help="with --merge: how the runs were made")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        help="only merge these result files (runs of other cities) into --out",
    )
    args = parser.parse_args()
    if args.merge:
        merge_results(args.merge, args.out, args.note)
        return
    isolated_home("lgsid-gen-")
    import torch

    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    if STHGCN in args.cities:
        register_sthgcn()
    ensure_semantic_ids(args.cities)
    ensure_ablation_codes(list(REAL_CITIES), args.cities, align=bool(args.code_ablations))
    log("semantic IDs (and ablation codes) ready", began)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.code_ablations:
        add_code_ablations(args, previous, began)
        return
    results = {"cities": {}, **{k: v for k, v in previous.items() if k == STHGCN_KEY}}
    results["cities"] = {
        k: v for k, v in previous.get("cities", {}).items() if "floors" in v and k in args.cities
    }
    config = {
        "stage": GENERATIVE,
        "sasrec": SASREC,
        "seeds": args.seeds,
        "threads": args.threads,
        "quick": args.quick,
        "cities": args.cities,
        "kinds": args.kinds,
    }
    for city in args.cities:
        started = time.perf_counter()

        def save(entry: dict, city: str = city, started: float = started) -> None:
            entry["seconds"] = time.perf_counter() - started
            if city == STHGCN:
                results[STHGCN_KEY] = sthgcn_entry(entry)
            else:
                results["cities"][city] = entry
            results["provenance"] = provenance(config)
            args.out.write_text(json.dumps(results, indent=2) + "\n")

        same = previous.get("provenance", {}).get("config", {})
        same = same.get("stage") == GENERATIVE and same.get("sasrec") == SASREC
        reuse = (
            (previous[STHGCN_KEY] if city == STHGCN else previous.get("cities", {})[city])
            if args.resume
            and same
            and city in [*previous.get("cities", {}), *([STHGCN] if STHGCN_KEY in previous else [])]
            else None
        )
        entry = run_city(city, args.seeds, began, args.quick, args.kinds, save, reuse)
        save(entry)
        log(f"{city} done in {entry['seconds']:.0f}s; wrote {args.out}", began)


if __name__ == "__main__":
    main()
