"""The generative stage of one city as plain functions: examples, floors, training, the
history-aware ranking and its per-example ranks (for means with intervals).

Every model and floor is scored on the same examples. One seeded sample of the validation
split drives early stopping; its even rows (``tune``) fit the re-ranker and its odd rows
(``gate``) score models for the champion gate, so the gate never sees the rows the weights
were chosen on. One seeded sample of the test split (``test``) is scored once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lgsid_pipeline.catalog import generative_model
from lgsid_pipeline.jsonio import read_json, write_json
from lgsid_pipeline.metrics.intervals import per_example, summarize_ranks, target_ranks
from lgsid_pipeline.plots import variant_curves_png
from lgsid_pipeline.recommenders.config import GenerativeStageConfig
from lgsid_pipeline.recommenders.datasets import split_times_of
from lgsid_pipeline.recommenders.next_item import (
    Examples,
    PopularityNearLastBaseline,
    UserHistoryBaseline,
    build_next_item_examples,
)
from lgsid_pipeline.recommenders.serving import GateDecision, champion_gate
from lgsid_pipeline.registry import (
    ModelArtifactError,
    champion_folder,
    champion_version,
    register_folder,
    set_champion,
)
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.outcome import Link, Markdown, Metadata, Plot
from lgsid_pipeline.tokenizer import level_columns
from lgsid_pipeline.warehouse import Warehouse

if TYPE_CHECKING:  # the model code (torch, transformers) is imported by the steps that train
    from lgsid_pipeline.recommenders.generative import GenerativeResult
    from lgsid_pipeline.recommenders.reranking import HistoryAwareRanker

RANK_DEPTH = 20  # ranked list length kept per example (Hit/NDCG@5/10, MRR truncated here)
SCORED = ("gate", "test")  # the samples every model and floor is ranked on
SERVED_FILE = "served.json"  # in a registered model folder: the variant served
RANKER_FOLDER = "ranker"  # ... and the fitted re-ranking of that variant
# the re-rankings scored per model: name -> feature groups left out (the ablations say what
# the model, the user's history and geography each add to the served ranking)
RANKINGS = {
    "blended": (),
    "no_model": ("model",),
    "no_history": ("history",),
    "no_distance": ("distance",),
}


@dataclass
class CityCatalogue:
    """A city's items in index order and its check-ins with item indices."""

    item_ids: list[str]
    lat: np.ndarray
    lon: np.ndarray
    events: pd.DataFrame


def city_catalogue(warehouse: Warehouse, city: str) -> CityCatalogue:
    """Items (index order = the items table's) and check-ins with an ``item_index``."""
    items = warehouse.read_table("items", city)
    item_ids = items["item_id"].astype(str).tolist()
    index = pd.Series(np.arange(len(item_ids)), index=item_ids)
    events = warehouse.read_table("interactions", city)
    events = events.assign(item_index=index.loc[events["item_id"].astype(str)].to_numpy())
    return CityCatalogue(
        item_ids, items["latitude"].to_numpy(float), items["longitude"].to_numpy(float), events
    )


def city_codes(
    warehouse: Warehouse, city: str, variant: str, item_ids: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Full codes (tokens + de-duplication token) in ``item_ids`` order, and code strings."""
    table = warehouse.read_table("semantic_ids", city, variant)
    table = table.set_index(table["item_id"].astype(str))
    missing = [i for i in item_ids if i not in table.index]
    if missing:
        raise ValueError(
            f"{len(missing)} items of {city!r} have no {variant} code (first "
            f"{missing[0]!r}); materialize the semantic IDs first"
        )
    rows = table.loc[item_ids]
    levels = level_columns(sum(c.startswith("level_") for c in table.columns))
    return rows[[*levels, "dedup"]].to_numpy(dtype=np.int64), rows["code"].astype(str).tolist()


def _sample(examples: Examples, cap: int, seed: int) -> Examples:
    histories, targets = examples
    if not cap or len(targets) <= cap:
        return examples
    keep = np.sort(np.random.default_rng(seed).choice(len(targets), cap, replace=False))
    return histories[keep], targets[keep]


def next_item_splits(
    catalogue: CityCatalogue, t1: pd.Timestamp, t2: pd.Timestamp, config: GenerativeStageConfig
) -> dict[str, Examples]:
    """Train / valid / test examples split by the target's time, with ``history_window``
    check-ins of history, each split sampled once with the config's seed."""
    events = catalogue.events
    splits = build_next_item_examples(
        events["user_id"].astype(str).to_numpy(),
        events["item_index"].to_numpy(),
        events["ts"],
        t1,
        t2,
        config.history_window,
    )
    return sample_splits(splits, config)


def sample_splits(
    splits: dict[str, Examples], config: GenerativeStageConfig
) -> dict[str, Examples]:
    """The seeded samples of each split, plus the ``tune`` and ``gate`` halves of valid."""
    caps = {
        "train": config.max_train_examples,
        "valid": config.max_valid_eval,
        "test": config.max_test_examples,
    }
    out = {
        name: _sample(splits[name], cap, config.seed + offset)
        for offset, (name, cap) in enumerate(caps.items())
    }
    histories, targets = out["valid"]
    if len(targets) < 2:
        raise ValueError(f"need at least 2 validation examples, got {len(targets)}")
    out["tune"] = histories[0::2], targets[0::2]
    out["gate"] = histories[1::2], targets[1::2]
    return out


def floor_models(
    catalogue: CityCatalogue, train: Examples
) -> dict[str, PopularityNearLastBaseline | UserHistoryBaseline]:
    """Floor (a), popularity within 2 km of the last check-in, and floor (b), the user's
    own most visited items and then that list, fitted on the training targets."""
    near = PopularityNearLastBaseline(catalogue.lat, catalogue.lon).fit(train)
    return {"popularity_2km": near, "user_history_2km": UserHistoryBaseline(near)}


def floor_ranks(
    catalogue: CityCatalogue, splits: dict[str, Examples], depth: int = RANK_DEPTH
) -> dict[str, dict[str, np.ndarray]]:
    """``{floor: {split: 0-based target ranks}}`` on the gate and test samples."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, floor in floor_models(catalogue, splits["train"]).items():
        out[name] = {
            split: target_ranks(floor.recommend(splits[split][0], depth)[0], splits[split][1])
            for split in SCORED
        }
    return out


@dataclass
class TrainedVariant:
    """One trained model with its fitted re-ranker and per-example ranks (gate and test) of
    the model alone (``plain``) and with the history-aware re-ranking (``blended``)."""

    result: GenerativeResult
    ranker: HistoryAwareRanker
    ranks: dict[str, dict[str, np.ndarray]]
    train_seconds: float
    inference_seconds: float

    @property
    def gate_hit10(self) -> float:
        """Hit@10 of the re-ranked list on the gate half of the validation sample."""
        ranks = self.ranks["blended"]["gate"]
        return float(np.mean((ranks >= 0) & (ranks < 10)))


def train_variant(
    kind: str,
    codes: np.ndarray,
    catalogue: CityCatalogue,
    splits: dict[str, Examples],
    config: GenerativeStageConfig,
    seed: int | None = None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
    ablations: bool = False,
) -> TrainedVariant:
    """Train one model, fit its re-ranking on ``tune``, rank ``gate`` and ``test``: the
    model alone (``plain``) and re-ranked (``blended``); with ``ablations`` also the
    re-rankings of :data:`RANKINGS` that leave a feature group out."""
    from lgsid_pipeline.recommenders.generative import train_generative
    from lgsid_pipeline.recommenders.reranking import HistoryAwareRanker, TransitionCounts

    seed = config.seed if seed is None else seed
    started = time.perf_counter()
    result = train_generative(config.model_config(kind, seed), codes, splits, on_eval=on_eval)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    near = floor_models(catalogue, splits["train"])["popularity_2km"]
    transitions = TransitionCounts(len(catalogue.item_ids)).fit(splits["train"])
    ranker = HistoryAwareRanker(result, catalogue.lat, catalogue.lon, near, transitions)
    pools = {split: ranker.candidates(splits[split][0]) for split in ("tune", *SCORED)}
    depth = max(10, min(RANK_DEPTH, config.beam_size))
    # the model alone: its beam, computed once with the candidates
    ranks = {
        "plain": {
            split: target_ranks(pools[split].beam[:, :depth], splits[split][1]) for split in SCORED
        }
    }
    chosen = RANKINGS if ablations else {"blended": RANKINGS["blended"]}
    for name, drop in reversed(chosen.items()):  # ``blended`` last: the ranker keeps it
        ranker.fit(splits["tune"], drop=drop, seed=seed, candidates=pools["tune"])
        ranks[name] = {
            split: target_ranks(ranker.rank(pools[split], depth), splits[split][1])
            for split in SCORED
        }
    return TrainedVariant(result, ranker, ranks, train_seconds, time.perf_counter() - started)


# --------------------------------------------------------------------------- gate and cache


def model_catalogue(folder: Path) -> tuple[list[str], list[str]]:
    """Item ids and code strings of the items a saved generative model can produce."""
    from lgsid_pipeline.recommenders.generative import GENERATIVE_FILES

    meta = GENERATIVE_FILES.read_meta(folder)
    return list(meta["item_ids"]), list(meta["code_strings"])


def served_ranker(
    folder: Path, catalogue: CityCatalogue
) -> tuple[HistoryAwareRanker, str, list[str], list[str]]:
    """The ranker a registered folder serves (its chosen variant, re-ranked), with the
    variant and that model's item ids and code strings."""
    from lgsid_pipeline.recommenders.reranking import load_ranker

    served = read_json(folder / SERVED_FILE)
    if not served or not (folder / served["variant"]).is_dir():
        raise ModelArtifactError(f"{folder} records no served variant ({SERVED_FILE})")
    variant = served["variant"]
    item_ids, code_strings = model_catalogue(folder / variant)
    position = pd.Series(np.arange(len(catalogue.item_ids)), index=catalogue.item_ids)
    known = position.reindex(item_ids)
    if known.isna().any():
        raise ModelArtifactError(
            f"{int(known.isna().sum())} items of the model in {folder} "
            "are no longer in the city's items"
        )
    rows = known.to_numpy(dtype=np.int64)
    ranker = load_ranker(
        folder / RANKER_FOLDER, folder / variant, catalogue.lat[rows], catalogue.lon[rows]
    )
    return ranker, variant, item_ids, code_strings


def champion_gate_score(
    name: str, home: Path, catalogue: CityCatalogue, gate: Examples
) -> tuple[float | None, str]:
    """The current champion's Hit@10 on today's gate examples, or None (and why) when there
    is none or its catalogue is not today's (it cannot rank today's items)."""
    from lgsid_pipeline.recommenders.fitting import VALID_K

    version = champion_version(name, home)
    if version is None:
        return None, "no champion yet"
    ranker, variant, item_ids, _ = served_ranker(champion_folder(name, home), catalogue)
    if item_ids != catalogue.item_ids:
        return None, f"champion v{version} knows other items than today's"
    items = ranker.recommend(gate[0], VALID_K)
    return float(
        np.mean((items == gate[1][:, None]).any(axis=1))
    ), f"champion v{version} ({variant})"


@dataclass
class StageOutcome:
    """What one generative stage run trained, registered and decided."""

    variants: dict[str, dict]
    served_variant: str
    decision: GateDecision
    champion_note: str
    version: str
    run_url: str
    sizes: dict[str, int]
    curves_png: bytes

    def metadata(self, city: str, kind: str) -> Metadata:
        from lgsid_pipeline.stages.evaluation import hit_variants_markdown

        results = self.variants
        return {
            **{f"hit@10_{v}": r["blended"]["hit@10"] for v, r in results.items()},
            **{f"hit@10_{v}_model_only": r["plain"]["hit@10"] for v, r in results.items()},
            "results": Markdown(hit_variants_markdown(results)),
            "examples": self.sizes,
            "gate": self.decision.reason,
            "promoted": self.decision.promote,
            "served_variant": self.served_variant,
            "mlflow_version": self.version,
            "mlflow_run": Link(self.run_url),
            "training_curve": Plot(city, f"{kind}_training.png", self.curves_png),
        }

    def report(self) -> dict:
        """The JSON report of the run (``reports/recommenders/<city>/<kind>.json``)."""
        return {
            "variants": self.variants,
            "examples": self.sizes,
            "served_variant": self.served_variant,
            "gate": {
                **self.decision.as_dict(),
                "champion_note": self.champion_note,
                "version": self.version,
            },
            "mlflow_version": self.version,
        }


def train_and_gate(
    ctx: StageContext,
    city: str,
    kind: str,
    t1: pd.Timestamp,
    t2: pd.Timestamp,
    config: GenerativeStageConfig,
    work_dir: Path | None = None,
    on_eval: Callable[[str, dict[str, float]], None] | None = None,
) -> StageOutcome:
    """Train ``kind`` on every code variant of ``city``, register the models in one MLflow
    version and promote it to ``champion`` only if its best variant beats floor (b) and the
    current champion on the gate examples (:func:`champion_gate`). The models are saved to
    ``work_dir`` (default: the model's folder of the context) before they are registered."""
    from lgsid_pipeline.recommenders.generative import save_generative

    warehouse, home, name = ctx.warehouse, ctx.home, generative_model(kind, city)
    work_dir = ctx.model_dir(name) if work_dir is None else work_dir
    catalogue = city_catalogue(warehouse, city)
    splits = next_item_splits(catalogue, t1, t2, config)
    sizes = {name: len(targets) for name, (_, targets) in splits.items()}
    floors = floor_ranks(catalogue, splits)
    floor_gate = float(np.mean(per_example(floors["user_history_2km"]["gate"], "hit@10")))
    results, curves, trained = {}, [], {}
    for variant in config.variants:
        codes, code_strings = city_codes(warehouse, city, variant, catalogue.item_ids)
        outcome = train_variant(
            kind,
            codes,
            catalogue,
            splits,
            config,
            on_eval=((lambda entry, v=variant: on_eval(v, entry)) if on_eval else None),
        )
        trained[variant] = outcome
        results[variant] = {
            **{key: summarize_ranks(ranks["test"]) for key, ranks in outcome.ranks.items()},
            "gate_hit@10": outcome.gate_hit10,
            "train_seconds": outcome.train_seconds,
            "inference_seconds": outcome.inference_seconds,
            "best_step": outcome.result.best_step,
        }
        save_generative(
            outcome.result,
            work_dir / variant,
            extra={
                "city": city,
                "variant": variant,
                "item_ids": catalogue.item_ids,
                "code_strings": code_strings,
            },
        )
        curves += [{**h, "variant": variant} for h in outcome.result.history]
    best = max(trained, key=lambda v: trained[v].gate_hit10)
    champion, note = champion_gate_score(name, home, catalogue, splits["gate"])
    decision = champion_gate(trained[best].gate_hit10, floor_gate, champion)
    write_json(work_dir / SERVED_FILE, {"variant": best})
    trained[best].ranker.save(work_dir / RANKER_FOLDER)
    png = variant_curves_png(curves, "step", "valid_hit@10", f"{city}: {kind}")
    registered = register_folder(
        name,
        work_dir,
        params={
            **asdict(config.model_config(kind)),
            "city": city,
            "variants": ",".join(config.variants),
            **sizes,
        },
        metrics={
            f"{v}.{key}.{m}": float(x)
            for v, r in results.items()
            for key in trained[v].ranks
            for m, x in r[key].items()
            if isinstance(x, float)
        }
        | {"gate_hit@10": trained[best].gate_hit10},
        dagster_run_id=ctx.run_id,
        tags={"city": city, "gate": decision.reason},
        images={"training.png": png},
        home=home,
        promote=False,
    )
    if decision.promote:
        set_champion(name, registered.version, home)
    return StageOutcome(
        results, best, decision, note, registered.version, registered.run_url, sizes, png
    )


def train_city_generative(
    ctx: StageContext, city: str, kind: str, config: GenerativeStageConfig
) -> StageOutcome:
    """Train and gate ``kind`` on ``city`` at the split of its recommender datasets
    (:func:`train_and_gate`), logging progress, and write the run's report."""

    log = ctx.log

    def log_eval(variant: str, entry: dict) -> None:
        log(
            f"{city} {kind}/{variant} step {entry['step']:.0f}: loss {entry['train_loss']:.4f} "
            f"valid hit@10 {entry['valid_hit@10']:.4f} ({entry['seconds']:.0f}s, "
            f"ETA {entry['eta_seconds']:.0f}s)"
        )

    t1, t2 = split_times_of(ctx.warehouse, city)
    outcome = train_and_gate(ctx, city, kind, t1, t2, config, on_eval=log_eval)
    decision = outcome.decision
    log(
        f"{city} {kind}: {decision.reason} ({outcome.champion_note}); "
        f"{'promoted' if decision.promote else 'not promoted'} version {outcome.version}"
    )
    split = {"t1": t1.isoformat(), "t2": t2.isoformat()}
    ctx.reports.write(
        ctx.reports.recommender(city, kind), {"kind": kind, **outcome.report(), "split": split}
    )
    return outcome
