"""The evaluation tables of a city, read back from the report store: the backbone x variant
AUC table of the CTR models and the Hit/NDCG table of the generative models and the floors
(``evaluation_report`` writes both into ``reports/<city>.json``; ``lgsid report`` shows
them)."""

from __future__ import annotations

from typing import cast

from lgsid_pipeline.catalog import BACKBONES, CTR_VARIANTS, GENERATIVE_KINDS
from lgsid_pipeline.metrics.intervals import summarize_ranks
from lgsid_pipeline.recommenders.config import GenerativeStageConfig
from lgsid_pipeline.recommenders.datasets import split_times_of
from lgsid_pipeline.reports import ReportStore
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.generative import city_catalogue, floor_ranks, next_item_splits
from lgsid_pipeline.stages.outcome import Markdown, Metadata

METRIC_KEYS = ("hit@5", "hit@10", "ndcg@5", "ndcg@10")  # the generative table's columns


def discriminative_table(reports: ReportStore, city: str) -> dict | None:
    """The backbone x variant AUC table of a city from the per-backbone reports: ``auc``
    (seed means), ``auc_ci95`` (``[lo, hi]``, None in reports from before intervals),
    ``logloss``, per backbone ``seeds``, ``interval`` and ``train_seconds`` (the variants'
    train seconds per model, summed)."""
    found = {b: reports.read(reports.recommender(city, b)) for b in BACKBONES}
    reports_of = {b: r for b, r in found.items() if r}
    if not reports_of:
        return None
    split = next(iter(reports_of.values()))["split"]
    return {
        "split": split,
        "auc": {
            b: {v: r["variants"][v]["auc"] for v in r["variants"]} for b, r in reports_of.items()
        },
        "auc_ci95": {
            b: {v: r["variants"][v].get("auc_ci95") for v in r["variants"]}
            for b, r in reports_of.items()
        },
        "logloss": {
            b: {v: r["variants"][v]["logloss"] for v in r["variants"]}
            for b, r in reports_of.items()
        },
        "seeds": {b: int(r.get("seeds", 1)) for b, r in reports_of.items()},
        "interval": {
            b: next(iter(r["variants"].values())).get("interval") for b, r in reports_of.items()
        },
        "train_seconds": {
            b: float(sum(v["train_seconds"] for v in r["variants"].values()))
            for b, r in reports_of.items()
        },
    }


def auc_markdown(table: dict) -> str:
    """backbone x variant test AUC with its 95% interval, best variant of each row in bold,
    and the number of seeds averaged per backbone."""
    variants = [v for v in CTR_VARIANTS if any(v in row for row in table["auc"].values())]
    intervals = table.get("auc_ci95", {})
    seeds = table.get("seeds", {})
    rows = [
        "| backbone | " + " | ".join(f"{v} AUC [95% CI]" for v in variants) + " | seeds |",
        "|---|" + "---:|" * (len(variants) + 1),
    ]
    for backbone, row in table["auc"].items():
        best = max(row.values())
        cells = []
        for v in variants:
            if v not in row:
                cells.append("-")
                continue
            cell = f"**{row[v]:.4f}**" if row[v] == best else f"{row[v]:.4f}"
            ci = intervals.get(backbone, {}).get(v)
            cells.append(cell + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        rows.append(f"| {backbone} | " + " | ".join(cells) + f" | {seeds.get(backbone, 1)} |")
    return "\n".join(rows)


def generative_table(reports: ReportStore, city: str) -> dict | None:
    """Hit/NDCG@5/10 of every generative model and variant (model alone and with the
    history-aware ranking) and of the floors, on the test sample."""
    out: dict = {}
    for kind in GENERATIVE_KINDS:
        report = reports.read(reports.recommender(city, kind))
        if report:
            for ranking, suffix in (("blended", ""), ("plain", "_model_only")):
                out[f"{kind}{suffix}"] = {
                    v: {k: r[ranking][k] for k in METRIC_KEYS}
                    for v, r in report["variants"].items()
                }
            out.setdefault("gate", {})[kind] = report.get("gate")
    baseline = reports.read(reports.recommender(city, "baseline"))
    if baseline:
        out["floors"] = {
            name: {k: m["test"][k] for k in METRIC_KEYS} for name, m in baseline["floors"].items()
        }
    return out or None


def generative_markdown(table: dict) -> str:
    """model/variant x Hit/NDCG table."""
    rows = [
        "| model | variant | " + " | ".join(METRIC_KEYS) + " |",
        "|---|---|" + "---:|" * len(METRIC_KEYS),
    ]
    for model, variants in table.items():
        if model in ("gate", "floors"):
            continue
        for variant, metrics in variants.items():
            rows.append(
                f"| {model} | {variant} | "
                + " | ".join(f"{metrics[k]:.4f}" for k in METRIC_KEYS)
                + " |"
            )
    for floor, metrics in table.get("floors", {}).items():
        rows.append(
            f"| floor | {floor} | " + " | ".join(f"{metrics[k]:.4f}" for k in METRIC_KEYS) + " |"
        )
    return "\n".join(rows)


def hit_variants_markdown(results: dict[str, dict]) -> str:
    """One generative model's variants: Hit/NDCG on the test sample, alone and re-ranked."""
    rows = [
        "| variant | ranking | hit@5 | hit@10 (95% CI) | ndcg@10 | train s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for variant, r in results.items():
        for key in ("plain", "blended"):
            m = r[key]
            lo, hi = m["hit@10_ci95"]
            rows.append(
                f"| {variant} | {key} | {m['hit@5']:.4f} | {m['hit@10']:.4f} "
                f"({lo:.3f}-{hi:.3f}) | {m['ndcg@10']:.4f} | {r.get('train_seconds', 0):.0f} |"
            )
    return "\n".join(rows)


def score_floors(ctx: StageContext, city: str, config: GenerativeStageConfig) -> Metadata:
    """Score floors (a) and (b) on the same gate and test samples as the generative models,
    write their report and return their Hit/NDCG@10."""
    warehouse, reports = ctx.warehouse, ctx.reports
    catalogue = city_catalogue(warehouse, city)
    t1, t2 = split_times_of(warehouse, city)
    floors = floor_ranks(catalogue, next_item_splits(catalogue, t1, t2, config))
    metrics = {
        name: {split: summarize_ranks(r) for split, r in ranks.items()}
        for name, ranks in floors.items()
    }
    reports.write(reports.recommender(city, "baseline"), {"kind": "floors", "floors": metrics})
    return {
        f"{name}.{split}.{key}": cast(float, m[key])
        for name, by_split in metrics.items()
        for split, m in by_split.items()
        for key in ("hit@10", "ndcg@10")
    }


def write_city_report(ctx: StageContext, city: str) -> Metadata:
    """Gather the city's AUC and Hit/NDCG tables into ``reports/<city>.json`` (whichever
    models have been trained) and return them for display."""
    reports, log = ctx.reports, ctx.log
    sections = {
        "discriminative": discriminative_table(reports, city),
        "generative": generative_table(reports, city),
    }
    if not any(sections.values()):
        raise RuntimeError(f"no trained recommenders for {city!r}; materialize them first")
    path = reports.city_summary(city)
    report = reports.read(path) or {}
    report.update({k: v for k, v in sections.items() if v})
    reports.write(path, report)
    out: Metadata = {"report_path": path}
    if sections["discriminative"]:
        table = sections["discriminative"]
        log(f"{city}: AUC table\n{auc_markdown(table)}")
        out["auc_table"] = Markdown(auc_markdown(table))
        out["split"] = table["split"]
    if sections["generative"]:
        out["generative_table"] = Markdown(generative_markdown(sections["generative"]))
    return out
