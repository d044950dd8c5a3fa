"""The ingest stage as plain functions: read a city's source (and any files landed for
it), clean it, and write raw, clean and quarantine tables into one staged version with the
audits of the staged files; the ``ingest_tables`` asset publishes it when they pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lgsid_pipeline.cities import CityConfig
from lgsid_pipeline.cleaning import QUARANTINE_COLUMNS, Validated
from lgsid_pipeline.ingest import audit_ingest, clean_interactions, clean_items, raw_tables
from lgsid_pipeline.plots import items_map_png
from lgsid_pipeline.quality import Audit
from lgsid_pipeline.warehouse import StagedVersion

STAGE = "ingest"  # the warehouse stage the four tables (and the quarantine) are published in


@dataclass
class StagedIngest:
    """What one ingest wrote to its staged version, and the audits of the staged files."""

    raw_items: pd.DataFrame
    raw_events: pd.DataFrame
    items: Validated
    events: Validated
    display_name: str
    audits: list[Audit]

    def summary(self) -> str:
        """One line of counts: raw, clean and quarantined by reason, per table."""
        parts = []
        for label, raw, validated in (
            ("items", self.raw_items, self.items),
            ("interactions", self.raw_events, self.events),
        ):
            reasons = validated.quarantine["reason"].value_counts().to_dict()
            parts.append(
                f"{len(raw)} raw {label} ({len(validated.clean)} clean, "
                f"{len(validated.quarantine)} quarantined {reasons})"
            )
        return ", ".join(parts)

    def item_figures(self) -> dict[str, Any]:
        """Counts and admin coverage of the clean items."""
        clean = self.items.clean

        def share(column: str) -> float:
            return float(clean[column].notna().mean()) if len(clean) else 0.0

        return {
            "rows": len(clean),
            "raw_rows": len(self.raw_items),
            "quarantined": len(self.items.quarantine),
            "quarantine_by_reason": self.items.quarantine["reason"].value_counts().to_dict(),
            "admin_level1_share": share("admin_l1_code"),
            "admin_level2_share": share("admin_l2_code"),
            "outside_share": float(clean["outside"].mean()) if len(clean) else 0.0,
            "brands": int(clean["brand"].nunique()),
        }

    def interaction_figures(self) -> dict[str, Any]:
        """Counts and time range of the clean check-ins."""
        clean = self.events.clean
        return {
            "rows": len(clean),
            "raw_rows": len(self.raw_events),
            "quarantined": len(self.events.quarantine),
            "quarantine_by_reason": self.events.quarantine["reason"].value_counts().to_dict(),
            "users": int(clean["user_id"].nunique()),
            "items_visited": int(clean["item_id"].nunique()),
            "first_ts": str(clean["ts"].min()) if len(clean) else "",
            "last_ts": str(clean["ts"].max()) if len(clean) else "",
        }

    def items_map(self) -> bytes:
        """A PNG map of the clean items coloured by admin level."""
        return items_map_png(self.items.clean, self.display_name)


def stage_ingest(
    config: CityConfig, staged: StagedVersion, landing_root: Path, max_quarantine_rate: float
) -> StagedIngest:
    """Read, clean and write the city's tables to ``staged``; each step reads the previous
    one's output back from disk, and the audits run on the staged files."""
    raw_items, raw_events = raw_tables(config, landing_root)
    staged.write_table("raw_items", raw_items)
    staged.write_table("raw_interactions", raw_events)
    raw_items = staged.read_table("raw_items")
    display_name = str(raw_items["city_name"].iloc[0]) if len(raw_items) else config.slug
    items = clean_items(raw_items.drop(columns=["city", "city_name"]), config, display_name)
    staged.write_table("items", items.clean)
    staged.write_table("quarantine", items.quarantine[list(QUARANTINE_COLUMNS)], part="items")
    events = clean_interactions(
        staged.read_table("raw_interactions").drop(columns=["city"]),
        staged.read_table("items"),
        config.slug,
    )
    staged.write_table("interactions", events.clean)
    staged.write_table(
        "quarantine", events.quarantine[list(QUARANTINE_COLUMNS)], part="interactions"
    )
    return StagedIngest(
        raw_items,
        raw_events,
        items,
        events,
        display_name,
        audit_ingest(staged, max_quarantine_rate),
    )
