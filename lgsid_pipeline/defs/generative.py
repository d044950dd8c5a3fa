"""Generative recommenders per city (TIGER, OneRec-style decoder, a popularity baseline) and
the per-user top-K cache served by `lgsid recommend` (METHOD section 5)."""

import json
import time
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from lgsid_pipeline.defs.resources import LgsidResource, city_partitions, png_metadata
from lgsid_pipeline.defs.tokenizer import TOKENIZER_ASSETS
from lgsid_pipeline.jsonio import read_json, write_json
from lgsid_pipeline.plots import curves_png
from lgsid_pipeline.recommenders.datasets import split_times_of
from lgsid_pipeline.recommenders.generative import (
    GenerativeConfig,
    PopularityNearLastBaseline,
    build_next_item_examples,
    evaluate_generative,
    latest_histories,
    load_generative,
    recommend_top_k,
    save_generative,
    train_generative,
)
from lgsid_pipeline.registry import register_folder
from lgsid_pipeline.tokenizer import level_columns

GENERATIVE_KINDS = ("tiger", "onerec")
CODE_VARIANTS = ("rqkmeans", "rqvae", "lgsid")
IDS_ASSETS = [names.ids_asset for names in TOKENIZER_ASSETS]
CACHE_MODEL = ("tiger", "lgsid")  # what user_topk_cache serves
METRIC_KEYS = ("hit@5", "hit@10", "ndcg@5", "ndcg@10")


class GenerativeTrainingConfig(dg.Config):
    """Model size, training and evaluation sample sizes (early stopping on validation Hit@10;
    the test sample is drawn once with ``seed`` and shared by every model and variant)."""

    variants: list[str] = list(CODE_VARIANTS)
    d_model: int = 128
    n_layers: int = 2
    epochs: int = 6
    patience: int = 2
    batch_size: int = 256
    lr: float = 1e-3
    beam_size: int = 20
    max_history: int = 20
    max_train_examples: int = 30_000  # most recent training examples (0: all)
    max_valid_eval: int = 500
    max_test_examples: int = 2_000  # 0: all
    seed: int = 0


class TopKCacheConfig(dg.Config):
    """How many items each user's cache holds."""

    k: int = 10


def city_items_and_events(lgsid: LgsidResource, city: str) -> tuple[list[str], pd.DataFrame]:
    """The city's item ids (the item index order) and its check-ins with item indices."""
    items = lgsid.warehouse.read_table("items", city)
    item_ids = items["item_id"].astype(str).tolist()
    index = pd.Series(np.arange(len(item_ids)), index=item_ids)
    events = lgsid.warehouse.read_table("interactions", city)
    events = events.assign(item_index=index.loc[events["item_id"].astype(str)].to_numpy())
    return item_ids, events


def code_table(lgsid: LgsidResource, city: str, variant: str,
               item_ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """Full codes (tokens + de-duplication token) in ``item_ids`` order, and code strings."""
    table = lgsid.warehouse.read_table("semantic_ids", city, variant)
    table = table.set_index(table["item_id"].astype(str))
    missing = [i for i in item_ids if i not in table.index]
    if missing:
        raise ValueError(f"{len(missing)} items of {city!r} have no {variant} code (first "
                         f"{missing[0]!r}); materialize the semantic IDs first")
    rows = table.loc[item_ids]
    levels = level_columns(sum(c.startswith("level_") for c in table.columns))
    codes = rows[[*levels, "dedup"]].to_numpy(dtype=np.int64)
    return codes, rows["code"].astype(str).tolist()


def model_catalogue(folder: Path) -> tuple[list[str], list[str]]:
    """Item ids and code strings of the items a saved generative model can produce."""
    meta = json.loads((Path(folder) / "generative_config.json").read_text())
    return list(meta["item_ids"]), list(meta["code_strings"])


def _examples(lgsid: LgsidResource, city: str, events: pd.DataFrame,
              config: GenerativeTrainingConfig) -> dict:
    t1, t2 = split_times_of(lgsid.warehouse, city)
    splits = build_next_item_examples(events["user_id"].astype(str).to_numpy(),
                                      events["item_index"].to_numpy(), events["ts"], t1, t2,
                                      config.max_history)
    histories, targets = splits["train"]
    if config.max_train_examples and len(targets) > config.max_train_examples:
        # Examples come user by user; keep a seeded sample rather than a few users' tails.
        keep = np.sort(np.random.default_rng(config.seed).choice(
            len(targets), config.max_train_examples, replace=False))
        splits["train"] = (histories[keep], targets[keep])
    histories, targets = splits["test"]
    if config.max_test_examples and len(targets) > config.max_test_examples:
        keep = np.sort(np.random.default_rng(config.seed + 1).choice(
            len(targets), config.max_test_examples, replace=False))
        splits["test"] = (histories[keep], targets[keep])
    return {"splits": splits, "t1": t1, "t2": t2}


def build_generative_asset(kind: str) -> dg.AssetsDefinition:
    """TIGER or the OneRec-style decoder for one city, one model per code variant."""

    @dg.asset(name=kind, deps=["recommender_datasets", *IDS_ASSETS],
              partitions_def=city_partitions, group_name="recommenders",
              kinds={"pytorch", "mlflow"},
              description=f"{kind} generative next-item model per code variant; beam search "
                          "constrained to valid codes; Hit/NDCG@5/10 on the test period.")
    def _asset(context: dg.AssetExecutionContext, config: GenerativeTrainingConfig,
               lgsid: LgsidResource) -> dg.MaterializeResult:
        city = context.partition_key
        unknown = sorted(set(config.variants) - set(CODE_VARIANTS))
        if unknown:
            raise ValueError(f"unknown variants {unknown}; choose from {CODE_VARIANTS}")
        lgsid.limit_threads()
        item_ids, events = city_items_and_events(lgsid, city)
        data = _examples(lgsid, city, events, config)
        splits = data["splits"]
        sizes = {name: len(targets) for name, (_, targets) in splits.items()}
        context.log.info(f"{city} {kind}: examples {sizes}")
        model_config = GenerativeConfig(
            kind=kind, d_model=config.d_model, n_layers=config.n_layers, epochs=config.epochs,
            patience=config.patience, batch_size=config.batch_size, lr=config.lr,
            beam_size=config.beam_size, max_history=config.max_history,
            max_valid_eval=config.max_valid_eval, seed=config.seed)
        name = f"gen-{kind}-{city}"
        folder = lgsid.model_dir(name)
        results, curves = {}, []
        for variant in config.variants:
            codes, _ = code_table(lgsid, city, variant, item_ids)
            started = time.perf_counter()

            def log_epoch(entry: dict, variant: str = variant) -> None:
                context.log.info(f"{city} {kind}/{variant} epoch {entry['epoch']:.0f}: loss "
                                 f"{entry['train_loss']:.4f} valid hit@10 "
                                 f"{entry['valid_hit@10']:.4f} ({entry['seconds']:.0f}s)")

            result = train_generative(model_config, codes, splits, on_epoch=log_epoch)
            train_seconds = time.perf_counter() - started
            started = time.perf_counter()
            metrics = evaluate_generative(result, codes, splits["test"])
            results[variant] = {**metrics, "train_seconds": train_seconds,
                                "inference_seconds": time.perf_counter() - started,
                                "best_epoch": result.best_epoch}
            _, code_strings = code_table(lgsid, city, variant, item_ids)
            save_generative(result, folder / variant, extra={
                "city": city, "variant": variant, "item_ids": item_ids,
                "code_strings": code_strings})
            curves += [{**h, "variant": variant} for h in result.history]
        png = _curves_png(curves, f"{city}: {kind}")
        registered = register_folder(
            name, folder, params={**asdict(model_config), "city": city,
                                  "variants": ",".join(config.variants), **sizes},
            metrics={f"{v}.{k}": float(x) for v, r in results.items() for k, x in r.items()},
            tags={"dagster_run_id": context.run.run_id, "city": city},
            images={"training.png": png}, home=lgsid.home_path)
        write_json(lgsid.report_path("recommenders", city, f"{kind}.json"), {
            "kind": kind, "variants": results, "examples": sizes,
            "mlflow_version": registered.version,
            "split": {"t1": data["t1"].isoformat(), "t2": data["t2"].isoformat()}})
        return dg.MaterializeResult(metadata={
            **{f"hit@10_{v}": r["hit@10"] for v, r in results.items()},
            "results": dg.MetadataValue.md(_markdown(results)),
            "examples": dg.MetadataValue.json(sizes),
            "mlflow_version": registered.version,
            "mlflow_run": dg.MetadataValue.url(registered.run_url),
            **png_metadata(png, lgsid.report_path("plots", city, f"{kind}_training.png"),
                           key="training_curve"),
        })

    return _asset


def _markdown(results: dict[str, dict]) -> str:
    rows = ["| variant | hit@5 | hit@10 | ndcg@5 | ndcg@10 | train s |",
            "|---|---:|---:|---:|---:|---:|"]
    rows += [f"| {v} | {r['hit@5']:.4f} | {r['hit@10']:.4f} | {r['ndcg@5']:.4f} | "
             f"{r['ndcg@10']:.4f} | {r.get('train_seconds', 0):.0f} |" for v, r in results.items()]
    return "\n".join(rows)


def _curves_png(history: list[dict], title: str) -> bytes:
    frame = pd.DataFrame(history)
    rows = [{"epoch": epoch, **dict(zip(("valid_hit@10_" + group["variant"]).tolist(),
                                        group["valid_hit@10"].tolist(), strict=True))}
            for epoch, group in frame.groupby("epoch")]
    return curves_png(rows, [f"valid_hit@10_{v}" for v in frame["variant"].unique()], "epoch",
                      title)


GENERATIVE_ASSETS = [build_generative_asset(kind) for kind in GENERATIVE_KINDS]


@dg.asset(deps=["recommender_datasets"], partitions_def=city_partitions,
          group_name="recommenders", kinds={"python"})
def generative_baseline(context: dg.AssetExecutionContext, config: GenerativeTrainingConfig,
                        lgsid: LgsidResource) -> dg.MaterializeResult:
    """Non-generative sanity floor: training-period popularity within 2 km of the user's
    last check-in, on the same test sample as the generative models."""
    city = context.partition_key
    item_ids, events = city_items_and_events(lgsid, city)
    items = lgsid.warehouse.read_table("items", city)
    data = _examples(lgsid, city, events, config)
    baseline = PopularityNearLastBaseline(items["latitude"].to_numpy(float),
                                          items["longitude"].to_numpy(float))
    metrics = baseline.fit(data["splits"]["train"]).evaluate(data["splits"]["test"])
    write_json(lgsid.report_path("recommenders", city, "baseline.json"),
               {"kind": "baseline", "metrics": metrics})
    return dg.MaterializeResult(metadata={k: float(v) for k, v in metrics.items()})


@dg.asset(deps=["tiger", *IDS_ASSETS], partitions_def=city_partitions,
          group_name="recommenders", kinds={"parquet", "duckdb"})
def user_topk_cache(context: dg.AssetExecutionContext, config: TopKCacheConfig,
                    lgsid: LgsidResource) -> dg.MaterializeResult:
    """Every user's top-K items (code, item id, score) from the registered TIGER model on
    LGSID codes, given their latest check-ins: serving is a lookup (Semantic Convergence)."""
    city = context.partition_key
    kind, variant = CACHE_MODEL
    lgsid.limit_threads()
    folder = lgsid.champion_folder(f"gen-{kind}-{city}") / variant
    result = load_generative(folder)
    item_ids, code_strings = model_catalogue(folder)
    events = lgsid.warehouse.read_table("interactions", city)
    index = pd.Series(np.arange(len(item_ids)), index=item_ids)
    known = events["item_id"].astype(str).isin(index.index)
    if not known.all():  # items newer than the model cannot be generated until it retrains
        context.log.warning(f"{city}: {int((~known).sum())} check-ins name items the model "
                            "has not seen; they are left out of the histories")
    events = events[known]
    users, histories = latest_histories(
        events["user_id"].astype(str).to_numpy(),
        index.loc[events["item_id"].astype(str)].to_numpy(), events["ts"],
        result.config.max_history)
    started = time.perf_counter()
    items, scores = recommend_top_k(result, result.tokenizer.codes, histories, config.k)
    seconds = time.perf_counter() - started
    ids, strings = np.asarray(item_ids), np.asarray(code_strings)
    refreshed = pd.Timestamp.now(tz="UTC")
    cache = pd.DataFrame({
        "city": city, "user_id": np.repeat(users.astype(str), config.k),
        "rank": np.tile(np.arange(1, config.k + 1), len(users)),
        "item_id": ids[items.ravel()], "code": strings[items.ravel()],
        "score": scores.ravel().astype(float), "model": f"{kind}/{variant}",
        "refreshed_at": refreshed})
    lgsid.warehouse.write_table("user_topk_cache", city, cache)
    lgsid.warehouse.refresh_catalog()
    context.log.info(f"{city}: cached top-{config.k} of {len(users)} users in {seconds:.1f}s")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(cache), "users": len(users), "k": config.k,
        "seconds": seconds, "users_per_s": len(users) / max(seconds, 1e-9),
        "model": f"{kind}/{variant}", "model_folder": dg.MetadataValue.path(str(folder))})


def generative_table(lgsid: LgsidResource, city: str) -> dict | None:
    """Hit/NDCG@5/10 of every generative model and variant, and the baseline's."""
    out = {}
    for kind in GENERATIVE_KINDS:
        report = read_json(lgsid.report_path("recommenders", city, f"{kind}.json"))
        if report:
            out[kind] = {v: {k: r[k] for k in METRIC_KEYS}
                         for v, r in report["variants"].items()}
            out.setdefault("train_seconds", {})[kind] = {
                v: r["train_seconds"] for v, r in report["variants"].items()}
            out.setdefault("inference_seconds", {})[kind] = {
                v: r["inference_seconds"] for v, r in report["variants"].items()}
    baseline = read_json(lgsid.report_path("recommenders", city, "baseline.json"))
    if baseline:
        out["baseline"] = {k: baseline["metrics"][k] for k in METRIC_KEYS}
    return out or None


def generative_markdown(table: dict) -> str:
    """model/variant x Hit/NDCG table."""
    rows = ["| model | variant | " + " | ".join(METRIC_KEYS) + " |",
            "|---|---|" + "---:|" * len(METRIC_KEYS)]
    for kind in GENERATIVE_KINDS:
        for variant, metrics in table.get(kind, {}).items():
            rows.append(f"| {kind} | {variant} | "
                        + " | ".join(f"{metrics[k]:.4f}" for k in METRIC_KEYS) + " |")
    if "baseline" in table:
        rows.append("| baseline | - | "
                    + " | ".join(f"{table['baseline'][k]:.4f}" for k in METRIC_KEYS) + " |")
    return "\n".join(rows)
