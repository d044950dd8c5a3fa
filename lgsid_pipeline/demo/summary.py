"""What ``lgsid demo`` prints at the end: per city the items and codes, the geography of
the embeddings before and after alignment, the CTR AUC table, the Hit@10 of the served
recommendations against the floors, where the plots are, and what to run next."""

from __future__ import annotations

from lgsid_pipeline.catalog import SERVED_KIND, TOKENIZER_KINDS
from lgsid_pipeline.report import city_report
from lgsid_pipeline.reports import ReportStore
from lgsid_pipeline.warehouse import Warehouse

NEXT_COMMANDS = (
    "make ui                                   # the Dagster UI: lineage, runs, plots",
    "lgsid lookup --city {city} --item ITEM_ID     # an item's semantic ID",
    "lgsid recommend --city {city} --user USER_ID  # a user's served top-10",
    "lgsid report --city {city} --json            # every figure of a city",
)


def _city_lines(warehouse: Warehouse, reports: ReportStore, city: str) -> list[str]:
    report = city_report(warehouse, city)
    items = report.get("items", {})
    lines = [
        f"{city}: {items.get('rows', 0)} items, "
        f"{report.get('interactions', {}).get('rows', 0)} check-ins, "
        f"{sum(report.get('quarantine', {}).values())} rows quarantined"
    ]
    codes = [
        f"{kind} {len(warehouse.read_table('semantic_ids', city, kind))}"
        for kind in TOKENIZER_KINDS
        if warehouse.has_table("semantic_ids", city, kind)
    ]
    if codes:
        lines.append("  codes: " + ", ".join(codes))
    alignment = report.get("alignment", {})
    if "after" in alignment:
        lines.append(
            "  geography (C@10 / NMI level 1), plain -> aligned encoder: "
            f"{alignment['before']['c_at_10']:.3f} -> {alignment['after']['c_at_10']:.3f} / "
            f"{alignment['before']['nmi_level1']:.3f} -> {alignment['after']['nmi_level1']:.3f}"
        )
    auc = report.get("discriminative", {}).get("auc", {})
    for backbone, variants in auc.items():
        cells = ", ".join(f"{v} {a:.3f}" for v, a in variants.items())
        lines.append(f"  AUC {backbone}: {cells}")
    served = reports.read(reports.recommender(city, SERVED_KIND))
    if served:
        floors = report.get("generative", {}).get("floors", {})
        lines += served_lines(served, floors)
    return lines


def served_lines(served: dict, floors: dict) -> list[str]:
    """What the cache serves, its test Hit@10 (floor (b)'s when the floor is served) beside
    the floors', and the gate's reason; ``served`` is the served kind's training report."""
    gate = served.get("gate", {})
    if gate.get("serve") == "floor":
        what, metrics = "floor (b)", floors.get("user_history_2km", {})
    else:
        variant = served.get("served_variant")
        what = f"{SERVED_KIND}/{variant} + history"
        metrics = served.get("variants", {}).get(variant, {}).get("blended", {})
    hit = f"{metrics['hit@10']:.3f}" if "hit@10" in metrics else "-"
    floor_cells = ", ".join(f"{name} {m['hit@10']:.3f}" for name, m in floors.items())
    return [
        f"  served: {what}, test Hit@10 {hit} (floors: {floor_cells})",
        f"  gate: {gate.get('reason', '-')}",
    ]


def demo_summary(warehouse: Warehouse, cities: list[str], events_log: str) -> str:
    """The closing summary of the demo as text."""
    reports = ReportStore(warehouse.home)
    lines = ["", "Summary"]
    for city in cities:
        lines += _city_lines(warehouse, reports, city)
    lines += [
        "",
        f"Plots: {reports.root / 'plots'}",
        f"Dagster event log of these runs: {events_log}",
        "Next:",
        *(f"  {c.format(city=cities[0])}" for c in NEXT_COMMANDS),
    ]
    return "\n".join(lines)
