"""The ingest stage as plain functions: read a city's source (and any files landed for
it), clean it, write raw, clean and quarantine tables into one staged version, audit the
staged files, and publish the version only when every blocking audit passes."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lgsid_pipeline.catalog import INGEST_ASSETS
from lgsid_pipeline.cities import CityConfig
from lgsid_pipeline.cleaning import QUARANTINE_COLUMNS, Validated
from lgsid_pipeline.config import shared_data_dir
from lgsid_pipeline.ingest import (
    INGEST_CHECKS,
    audit_ingest,
    clean_interactions,
    clean_items,
    raw_tables,
)
from lgsid_pipeline.plots import items_map_png
from lgsid_pipeline.quality import Audit, CheckOutcome
from lgsid_pipeline.sources.base import CHECKIN_ONLY_ORIGIN, checkin_only_items
from lgsid_pipeline.sources.landing import landed_file_stats, read_landing_files
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.outcome import UNCHANGED, Metadata, Plot, publish_if_passed
from lgsid_pipeline.warehouse import StagedVersion, Warehouse

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
    merged: list[str] = field(default_factory=list)  # landed files merged into the old tables

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
    config: CityConfig,
    staged: StagedVersion,
    landing_root: Path,
    max_quarantine_rate: float,
    raw: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    enriched: pd.DataFrame | None = None,
) -> StagedIngest:
    """Read, clean and write the city's tables to ``staged``; each step reads the previous
    one's output back from disk, and the audits run on the staged files.

    ``raw`` gives the raw items and check-ins instead of reading the source, and
    ``enriched`` the clean items whose admin join can be reused (``stage_landed_additions``)."""
    raw_items, raw_events = raw if raw is not None else raw_tables(config, landing_root)
    staged.write_table("raw_items", raw_items)
    staged.write_table("raw_interactions", raw_events)
    raw_items = staged.read_table("raw_items")
    display_name = str(raw_items["city_name"].iloc[0]) if len(raw_items) else config.slug
    items = clean_items(
        raw_items.drop(columns=["city", "city_name"]), config, display_name, enriched
    )
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


def landing_folder(config: CityConfig, landing_root: Path) -> Path:
    """Where files landed for the city are: its source folder for a ``landing`` city, else
    ``<landing_root>/<city>`` (additions to its source)."""
    return Path(config.path) if config.source == "landing" else landing_root / config.slug


def stage_landed_additions(
    warehouse: Warehouse,
    config: CityConfig,
    staged: StagedVersion,
    landing_root: Path,
    names: list[str],
    max_quarantine_rate: float,
) -> StagedIngest | None:
    """Merge the newly landed files ``names`` into the published tables, reading nothing
    else: their rows are appended to the published raw tables, the whole is validated again
    (ids duplicated across old and new rows, check-ins of new items), and only the new items
    are joined with the admin boundaries. None when a new row concerns a check-in-only item
    (its location is the median of all its check-ins): only a full read is right then."""
    city = config.slug
    previous_items = warehouse.read_table("raw_items", city)
    items, events = read_landing_files(landing_folder(config, landing_root), set(names))
    derived = previous_items["origin"] == CHECKIN_ONLY_ORIGIN
    checkin_only = set(previous_items.loc[derived, "item_id"].dropna())
    touched = set(items["item_id"].dropna()) | set(events["item_id"].dropna())
    if checkin_only & touched:
        return None
    extra = checkin_only_items(events, pd.concat([previous_items["item_id"], items["item_id"]]))
    display_name = previous_items["city_name"].iloc[0] if len(previous_items) else city
    new_items = pd.concat([items, extra], ignore_index=True)
    raw = (
        pd.concat(
            [previous_items, new_items.assign(city=city, city_name=display_name)],
            ignore_index=True,
        ),
        pd.concat(
            [warehouse.read_table("raw_interactions", city), events.assign(city=city)],
            ignore_index=True,
        ),
    )
    enriched = warehouse.read_table("items", city)
    ingest = stage_ingest(config, staged, landing_root, max_quarantine_rate, raw, enriched)
    ingest.merged = list(names)
    return ingest


INGEST_RULES = 1  # bump when the cleaning rules change: every city is then read again


def input_state(
    config: CityConfig, landing_root: Path, max_quarantine_rate: float
) -> dict[str, Any]:
    """What an ingest of ``config``'s city reads, fingerprinted without reading it:
    ``source``, a digest of the city's settings, the limit, the cleaning rules' version and
    the name, size and mtime of every source and admin-boundary file; ``landed``, each landed
    file's size and mtime by name. Equal states mean a new ingest would publish the same
    tables; new landed files alone can be merged (``appendable_files``)."""
    digest = hashlib.sha256(
        json.dumps(
            [asdict(config), max_quarantine_rate, INGEST_RULES], sort_keys=True, default=str
        ).encode()
    )
    roots = [shared_data_dir() / "boundaries"]
    if config.source != "landing":
        roots.append(Path(config.path))
    if config.boundaries and Path(config.boundaries).exists():
        roots.append(Path(config.boundaries))
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    landed = landed_file_stats(landing_folder(config, landing_root))
    return {"source": digest.hexdigest()[:20], "landed": landed}


def appendable_files(previous: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The landed files that can be merged into the published tables without reading the
    rest: new files, named after every earlier one (a full read takes files in name order),
    when the source and every earlier landed file are unchanged. Empty: read everything."""
    if not previous or previous.get("source") != current["source"]:
        return []
    old, now = previous.get("landed", {}), current["landed"]
    if any(now.get(name) != stats for name, stats in old.items()):
        return []  # a landed file was rewritten or removed
    new = sorted(set(now) - set(old))
    if old and new and new[0] <= max(old):
        return []
    return new


@dataclass
class PublishedIngest:
    """The published ingest version of a city: what this run staged (None when its inputs
    had not changed and nothing was read), the version, the checks, the time taken."""

    config: CityConfig
    staged: StagedIngest | None
    version: str
    seconds: float
    unchanged: bool
    manifest: dict[str, Any]

    def asset_metadata(self) -> dict[str, Metadata]:
        """Metadata of each of the four tables, by asset name."""
        common = {"version": self.version, "seconds": round(self.seconds, 2)}
        common["unchanged"] = self.unchanged
        staged = self.staged
        if staged is not None:
            common["merged_files"] = len(staged.merged)
        if staged is None:  # nothing read: the published version's row counts
            tables = self.manifest["tables"]
            return {
                asset: {
                    **common,
                    "dagster/row_count": sum(p["rows"] for p in tables[asset].values()),
                }
                for asset in INGEST_ASSETS
            }
        out: dict[str, Metadata] = {
            "raw_items": {
                **common,
                "source": self.config.source,
                "dagster/row_count": len(staged.raw_items),
                "source_path": Path(self.config.path),
            },
            "raw_interactions": {
                **common,
                "source": self.config.source,
                "dagster/row_count": len(staged.raw_events),
            },
        }
        for asset, figures in (
            ("items", staged.item_figures()),
            ("interactions", staged.interaction_figures()),
        ):
            out[asset] = {**common, "dagster/row_count": figures.pop("rows"), **figures}
        out["items"]["map"] = Plot(self.config.slug, "items_map", staged.items_map())
        return out

    def audits_of(self, asset: str) -> list[Audit]:
        """The checks of one table: this run's audits, or the published version's."""
        if self.staged is not None:
            return [a for a in self.staged.audits if a.asset == asset]
        return [
            Audit(name, asset, CheckOutcome(check["passed"], check["description"]))
            for name, check in self.manifest.get("checks", {}).items()
            if name in INGEST_CHECKS.get(asset, {})
        ]


def ingest_city(
    ctx: StageContext, config: CityConfig, max_quarantine_rate: float, full: bool = False
) -> PublishedIngest:
    """Stage, audit and publish one ingest of ``config``'s city as one version (raises
    ``BlockingCheckFailed`` and publishes nothing when a blocking audit fails).

    When nothing it reads has changed since the published version (``input_fingerprint``),
    nothing is read and no version is written; ``full`` reads and cleans everything anyway."""
    city, started = config.slug, time.perf_counter()
    warehouse, landing_root, log = ctx.warehouse, ctx.landing, ctx.log
    inputs = input_state(config, landing_root, max_quarantine_rate)
    current = warehouse.published(city, STAGE)
    if not full and current is not None and current.get("inputs") == inputs:
        log(f"{city}: sources unchanged since ingest version {current['version']}; nothing read")
        seconds = time.perf_counter() - started
        return PublishedIngest(config, None, current["version"], seconds, True, current)
    added = [] if full or current is None else appendable_files(current.get("inputs"), inputs)
    with warehouse.staging(city, STAGE, carry_forward=False) as staged:
        ingest = None
        if added:
            log(f"{city}: merging {len(added)} new landed file(s) {added}")
            ingest = stage_landed_additions(
                warehouse, config, staged, landing_root, added, max_quarantine_rate
            )
        if ingest is None:
            ingest = stage_ingest(config, staged, landing_root, max_quarantine_rate)
        checks = {
            a.name: {"passed": a.outcome.passed, "description": a.outcome.description}
            for a in ingest.audits
        }
        pointer = publish_if_passed(
            warehouse,
            staged,
            f"{city} ingest",
            ingest.audits,
            {"run_id": ctx.run_id, "checks": checks, "inputs": inputs},
        )
    warehouse.refresh_catalog()
    seconds = time.perf_counter() - started
    what = "kept (same tables)" if pointer[UNCHANGED] else "published"
    what += f" (merged {len(ingest.merged)} landed file(s))" if ingest.merged else ""
    log(f"{city}: {what} ingest version {pointer['version']}: {ingest.summary()} in {seconds:.1f}s")
    return PublishedIngest(config, ingest, pointer["version"], seconds, pointer[UNCHANGED], pointer)
