"""The ingest stage as plain functions: source -> raw tables -> clean items and interactions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lgsid_pipeline.cities import CityConfig, check_source_path
from lgsid_pipeline.cleaning import (
    Validated,
    assign_brands,
    content_hash,
    validate_interactions,
    validate_items,
)
from lgsid_pipeline.config import shared_data_dir
from lgsid_pipeline.frames import is_in
from lgsid_pipeline.geo.admin import (
    ADMIN_COLUMNS,
    BoundarySet,
    assign_admin,
    detect_boundary_set,
    folder_boundary_set,
    named_boundary_sets,
)
from lgsid_pipeline.quality import (
    Audit,
    check_accounted,
    check_coordinates,
    check_quarantine_rate,
    check_schema,
    check_unique,
)
from lgsid_pipeline.sources.base import SourceData
from lgsid_pipeline.sources.landing import read_landing_source, with_landed_additions
from lgsid_pipeline.sources.sthgcn import read_sthgcn
from lgsid_pipeline.sources.tables import GOWALLA_LAYOUT, SYNTHETIC_LAYOUT, read_table_source
from lgsid_pipeline.sources.tsmc import read_tsmc
from lgsid_pipeline.warehouse import StagedVersion

# Columns whose change means an item must be re-encoded later.
CONTENT_COLUMNS = [
    "name",
    "category",
    "brand",
    "latitude",
    "longitude",
    "admin_l1_name",
    "admin_l2_name",
    "admin_l3_code",
]


def read_city_source(config: CityConfig) -> SourceData:
    """Read a registered city's source into raw items and raw interactions."""
    path = check_source_path(config.source, Path(config.path))
    default_name = config.display_name or config.slug.replace("-", " ").title()
    if config.source == "foursquare-tsmc":
        data = read_tsmc(path, encoding=config.encoding)
        data.display_name = default_name
    elif config.source == "foursquare-sthgcn":
        data = read_sthgcn(path)
        data.display_name = default_name
    elif config.source == "gowalla":
        data = read_table_source(path, GOWALLA_LAYOUT, default_name)
    elif config.source == "landing":
        data = read_landing_source(path, default_name)
    else:
        data = read_table_source(path, SYNTHETIC_LAYOUT, default_name)
    if config.display_name:
        data.display_name = config.display_name
    return data


def boundaries_for(config: CityConfig, lat: np.ndarray, lon: np.ndarray) -> BoundarySet:
    """The admin boundaries of a city: its own polygons, a named region, or auto-detected."""
    choice = config.boundaries
    own_polygons = (Path(config.path) / "admin_level1.geojson").is_file()
    if config.source in ("synthetic", "landing") and choice is None and own_polygons:
        return folder_boundary_set(Path(config.path))
    real = named_boundary_sets(shared_data_dir() / "boundaries")
    if choice in real:
        return real[choice]
    if choice is not None:
        folder = Path(choice)
        if folder.is_dir():
            named = named_boundary_sets(folder)
            present = {k: v for k, v in named.items() if v.level1.path.is_file()}
            if present:
                return detect_boundary_set(present, lat, lon)
            return folder_boundary_set(folder, folder.name)
        raise FileNotFoundError(
            f"boundaries {choice!r} is neither a known region ({', '.join(real)}) nor a folder"
        )
    return detect_boundary_set(real, lat, lon)


ADMIN_DTYPES = {**{c: "string" for c in ADMIN_COLUMNS[:-1]}, "outside": bool}


def clean_items(
    raw_items: pd.DataFrame,
    config: CityConfig,
    display_name: str,
    enriched: pd.DataFrame | None = None,
) -> Validated:
    """Validate raw items, then add admin levels, brand key and content hash.

    ``enriched`` (the published clean items of an earlier ingest, same boundaries) lends its
    admin columns to the rows it holds (by ``source_row``), so only new rows are joined with
    the boundaries, and unchanged rows keep their content hash; brands are derived over every
    row either way."""
    validated = validate_items(raw_items, config.slug)
    items = validated.clean.reset_index(drop=True)
    known = None  # the published items by source row, when their admin join can be reused
    if items.empty:
        for column in ADMIN_COLUMNS[:-1]:
            items[column] = pd.Series(dtype="string")
        items["outside"] = pd.Series(dtype=bool)
    else:
        lat, lon = items["latitude"].to_numpy(), items["longitude"].to_numpy()
        boundaries = boundaries_for(config, lat, lon)
        if enriched is not None and len(enriched):
            previous = boundaries_for(
                config, enriched["latitude"].to_numpy(), enriched["longitude"].to_numpy()
            )
            if previous.name == boundaries.name:  # else every row is joined again
                known = enriched.drop_duplicates("source_row").set_index("source_row")
        reuse = (
            is_in(items["source_row"], known.index)
            if known is not None
            else np.zeros(len(items), dtype=bool)
        )
        parts = []
        if (~reuse).any():
            fresh = assign_admin(lat[~reuse], lon[~reuse], boundaries)
            parts.append(fresh.set_axis(items.index[~reuse]))
        if known is not None and reuse.any():
            rows = known.loc[items.loc[reuse, "source_row"], list(ADMIN_COLUMNS)]
            parts.append(rows.set_axis(items.index[reuse]))
        admin = pd.concat(parts).sort_index().astype(ADMIN_DTYPES)
        items = pd.concat([items, admin], axis=1)
    items["brand"] = assign_brands(items)
    items["city_name"] = pd.Series([display_name] * len(items), dtype="string")
    earlier = None
    if known is not None:  # the published rows of the same source rows, to reuse their hashes
        earlier = known.reindex(items["source_row"])[[*CONTENT_COLUMNS, "content_hash"]]
        earlier = earlier.set_axis(items.index)
    items["content_hash"] = content_hash(items, CONTENT_COLUMNS, earlier)
    ordered = [
        "city",
        "item_id",
        "name",
        "category",
        "category_id",
        "brand",
        "brand_raw",
        "latitude",
        "longitude",
        *ADMIN_COLUMNS,
        "city_name",
        "origin",
        "content_hash",
        "source_row",
    ]
    return Validated(clean=items[ordered], quarantine=validated.quarantine)


def clean_interactions(raw_interactions: pd.DataFrame, items: pd.DataFrame, city: str) -> Validated:
    """Validate raw interactions against the clean items of the same city."""
    return validate_interactions(raw_interactions, items["item_id"], city)


def raw_tables(
    config: CityConfig, landing_root: Path | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw items and raw interactions of a city, each row tagged with the city.

    With ``landing_root``, files landed in ``<landing_root>/<city>/`` for a city whose source is
    not the landing folder itself are read as additions to its source.
    """
    data = read_city_source(config)
    if landing_root is not None and config.source != "landing":
        data = with_landed_additions(data, landing_root / config.slug)
    items = data.items.assign(city=config.slug, city_name=data.display_name)
    interactions = data.interactions.assign(city=config.slug)
    return items, interactions


ITEM_COLUMNS = (
    "city",
    "item_id",
    "name",
    "category",
    "brand",
    "latitude",
    "longitude",
    "admin_l1_code",
    "admin_l2_code",
    "admin_l3_code",
    "h3_cell",
    "outside",
    "content_hash",
)
INTERACTION_COLUMNS = ("city", "user_id", "item_id", "ts")


# The ingest tables (catalog.INGEST_ASSETS): the tables each is derived from, and what it holds.
INGEST_TABLES: dict[str, tuple[list[str], str]] = {
    "raw_items": ([], "Every item row of the city's source, as text, nothing dropped."),
    "raw_interactions": ([], "Every check-in row of the city's source, as text."),
    "items": (
        ["raw_items"],
        "Clean items with admin levels (spatial join), H3 cell, brand key and content hash.",
    ),
    "interactions": (
        ["raw_interactions", "items"],
        "Clean check-ins (user, item, UTC time) whose item is a clean item of the city.",
    ),
}
# The blocking checks of each clean table (names and descriptions), as ``audit_ingest`` runs them.
INGEST_CHECKS: dict[str, dict[str, str]] = {
    "items": {
        "items_schema": "every item column is present",
        "items_coordinates_in_range": "latitudes in [-90, 90], longitudes in [-180, 180]",
        "items_unique_ids": "no two clean items share an id",
        "items_quarantine_rate": "the quarantined share of raw items is within the limit",
        "items_counts_reconcile": "raw = clean + quarantined, per source row, on disk",
    },
    "interactions": {
        "interactions_schema": "every check-in column is present",
        "interactions_quarantine_rate": "the quarantined share of raw check-ins is within "
        "the limit",
        "interactions_counts_reconcile": "raw = clean + quarantined, per source row, on disk",
    },
}


def audit_ingest(staged: StagedVersion, max_quarantine_rate: float) -> list[Audit]:
    """Run every blocking ingest check on the staged tables as re-read from disk.

    Reconciliation compares the persisted raw, clean and quarantine files row by row (by
    ``source_row``), so a row lost or doubled on the way to disk fails it.
    """
    raw_items = staged.read_table("raw_items")
    items = staged.read_table("items")
    q_items = staged.read_table("quarantine", "items")
    raw_events = staged.read_table("raw_interactions")
    events = staged.read_table("interactions")
    q_events = staged.read_table("quarantine", "interactions")

    def rows(frame: pd.DataFrame) -> pd.Series:
        return frame["source_row"] if "source_row" in frame else pd.Series([], dtype="string")

    return [
        Audit("items_schema", "items", check_schema(items, ITEM_COLUMNS)),
        Audit("items_coordinates_in_range", "items", check_coordinates(items)),
        Audit("items_unique_ids", "items", check_unique(items, ["item_id"])),
        Audit(
            "items_quarantine_rate",
            "items",
            check_quarantine_rate(len(items), len(q_items), max_quarantine_rate),
        ),
        Audit(
            "items_counts_reconcile",
            "items",
            check_accounted(rows(raw_items), rows(items), rows(q_items)),
        ),
        Audit("interactions_schema", "interactions", check_schema(events, INTERACTION_COLUMNS)),
        Audit(
            "interactions_quarantine_rate",
            "interactions",
            check_quarantine_rate(len(events), len(q_events), max_quarantine_rate),
        ),
        Audit(
            "interactions_counts_reconcile",
            "interactions",
            check_accounted(rows(raw_events), rows(events), rows(q_events)),
        ),
    ]
