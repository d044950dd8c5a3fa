"""Property-based fuzzing of the source readers and the cleaning rules.

Hostile item and check-in rows (random unicode names with control characters, NaN, inf,
out-of-range or textual coordinates, duplicate and unknown ids, odd or garbage timestamps,
missing optional columns, empty files) are written in each source layout: a landing folder
(CSV and Parquet), the synthetic and Gowalla two-table Parquet layouts, TSMC2014
tab-separated text and the three GETNext/STHGCN CSV split files. Properties:

* reading raises nothing but ``SourceError``, and that only for whole-file problems (an empty
  file, a required column missing), which the example planted;
* no row is lost on reading: one raw check-in per written row or line, one raw item per
  written item row plus the derived check-in-only items;
* cleaning never raises and reconciles exactly: raw = clean + quarantined, by ``source_row``;
  every quarantine row has a documented reason; clean rows keep the invariants (finite
  coordinates in range, unique stripped ids, interactions only of clean items, parsed UTC
  times, no duplicate events).
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lgsid_pipeline.cities import CityConfig
from lgsid_pipeline.cleaning import Validated
from lgsid_pipeline.ingest import clean_interactions, clean_items, read_city_source
from lgsid_pipeline.sources.base import SourceData, SourceError

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

SLUG = "fuzz-city"
# The fuzzed city: a 0.2 x 0.2 degree box around (40.0, -3.7), cut into 2 / 4 / 8 areas.
LAT0, LAT1, LON0, LON1 = 39.9, 40.1, -3.8, -3.6
ITEM_REASONS = {
    "malformed_row",
    "missing_id",
    "invalid_utf8",
    "missing_coordinates",
    "unparseable_coordinates",
    "latitude_out_of_range",
    "longitude_out_of_range",
    "null_island",
    "duplicate_id",
}
INTERACTION_REASONS = {
    "malformed_row",
    "missing_user_id",
    "missing_item_id",
    "invalid_utf8",
    "unparseable_coordinates",
    "latitude_out_of_range",
    "longitude_out_of_range",
    "null_island",
    "unparseable_timestamp",
    "unknown_item",
    "duplicate_event",
}
# Sized for the suite's time budget; LGSID_FUZZ_EXAMPLES=2000 fuzzes harder.
FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("LGSID_FUZZ_EXAMPLES", "80")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------------------------
# The synthetic city's admin polygons (written once per module)


def _box(lon0: float, lat0: float, lon1: float, lat1: float) -> dict:
    ring = [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]
    return {"type": "Polygon", "coordinates": [ring]}


def _write_level(path: Path, areas: list[tuple[str, str | None, tuple]]) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": _box(*bounds),
            "properties": {"code": code, "name": f"Area {code}", "parent_code": parent},
        }
        for code, parent, bounds in areas
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


@pytest.fixture(scope="module")
def boundaries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of ``admin_level{1,2,3}.geojson``: halves, quadrants, eighths of the box."""
    folder = tmp_path_factory.mktemp("fuzz_boundaries")
    mid_lat, mid_lon = (LAT0 + LAT1) / 2, (LON0 + LON1) / 2
    halves = {"W": (LON0, LAT0, mid_lon, LAT1), "E": (mid_lon, LAT0, LON1, LAT1)}
    _write_level(folder / "admin_level1.geojson", [(c, None, b) for c, b in halves.items()])
    quads = []
    for code, (x0, y0, x1, y1) in halves.items():
        quads += [
            (f"{code}S", code, (x0, y0, x1, mid_lat)),
            (f"{code}N", code, (x0, mid_lat, x1, y1)),
        ]
    _write_level(folder / "admin_level2.geojson", quads)
    eighths = []
    for code, _, (x0, y0, x1, y1) in quads:
        xm = (x0 + x1) / 2
        eighths += [(f"{code}1", code, (x0, y0, xm, y1)), (f"{code}2", code, (xm, y0, x1, y1))]
    _write_level(folder / "admin_level3.geojson", eighths)
    return folder


# ---------------------------------------------------------------------------------------------
# Hostile values

WEIRD_TEXT = [
    "",
    " ",
    "\t",
    "\u3000",
    "nan",
    "NaN",
    "None",
    "null",
    "N/A",
    "-",
    "\x00",
    "\u200b",
    "\ufeff",
    "🍕",
    "Café",
    "a,b",
    'say "hi"',
    "line\nbreak",
    "cr\rlf",
]
# Control characters and unusual code points are welcome; surrogates cannot be stored.
any_text = st.one_of(
    st.sampled_from(WEIRD_TEXT), st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
)
maybe_text = st.one_of(st.none(), any_text)
ID_POOL = ["1", "2", "3", "a", " a ", "A", "a\t", "007", "1.0", "x" * 40, "é", "\x01"]
item_ids = st.one_of(st.none(), st.sampled_from(ID_POOL), any_text)

inside_lat = st.floats(LAT0 + 1e-6, LAT1 - 1e-6)
inside_lon = st.floats(LON0 + 1e-6, LON1 - 1e-6)
odd_float = st.one_of(
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.just(0.0),
    st.floats(-1e6, 1e6),
    st.floats(allow_nan=True, allow_infinity=True),
)


def coordinate(inside: st.SearchStrategy[float], typed: bool = False) -> st.SearchStrategy:
    """Mostly in the city; else NaN, inf, out of range, null island, missing or (unless
    ``typed``, a float column) text: padded, comma decimals, hex, garbage."""
    if typed:
        return st.one_of(*[inside] * 6, st.none(), odd_float)
    as_text = st.one_of(
        inside.map(repr),
        inside.map(lambda v: f"  {v}  "),
        inside.map(lambda v: f"{v:.3f}"),
        inside.map(lambda v: f"{v}".replace(".", ",")),
        odd_float.map(repr),
        st.sampled_from(
            [
                "",
                " ",
                "abc",
                "1e400",
                "-1e400",
                "0x28",
                "40°N",
                "nan",
                "inf",
                "+40.0",
                "4e1",
                "--3.7",
                "1_0",
            ]
        ),
    )
    return st.one_of(*[inside] * 6, st.none(), odd_float, as_text)


_base = datetime(2025, 1, 1, tzinfo=UTC)
when = st.builds(lambda s: _base + timedelta(seconds=s), st.integers(-(10**9), 10**9))
timestamp_text = st.one_of(
    when.map(lambda t: t.isoformat()),
    when.map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S")),
    when.map(lambda t: t.strftime("%Y-%m-%d")),
    when.map(lambda t: t.astimezone(timezone(timedelta(hours=9))).isoformat()),
    when.map(lambda t: t.strftime("%a %b %d %H:%M:%S +0000 %Y")),
    when.map(lambda t: t.strftime("%d/%m/%Y %H:%M")),
    when.map(lambda t: str(int(t.timestamp()))),
    st.sampled_from(
        [
            "",
            "garbage",
            "2025-13-45T99:00:00",
            "0000-00-00",
            "9999-12-31T23:59:59",
            "0001-01-01",
            "Mon Dec 10 13:21:15 +0000 2012",
            "Xyz Foo 99 1:2:3 +0 1",
            "2025-01-01T00:00:00Z",
            "2025-01-01T00:00:00+25:00",
            "NaT",
            "now",
        ]
    ),
    any_text,
)


@dataclass
class Rows:
    """Rows of one file: column -> values; kinds say how Parquet types a column."""

    columns: dict[str, list]
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@st.composite
def item_rows(draw: st.DrawFn, names: dict[str, str], max_rows: int = 12) -> Rows:
    """Hostile item rows under the layout's column ``names`` (ours -> file's)."""
    n = draw(st.integers(0, max_rows))
    float_coords = draw(st.booleans())  # Parquet: a float column, or text
    ids_as_int = draw(st.booleans()) and "item_id" in names
    columns: dict[str, list] = {}
    kinds: dict[str, str] = {}
    for ours, theirs in names.items():
        if ours == "item_id":
            values = draw(
                st.lists(
                    st.one_of(st.none(), st.integers(-5, 20)) if ids_as_int else item_ids,
                    min_size=n,
                    max_size=n,
                )
            )
            kinds[theirs] = "int" if ids_as_int else "text"
        elif ours in ("latitude", "longitude"):
            inside = inside_lat if ours == "latitude" else inside_lon
            values = draw(st.lists(coordinate(inside, typed=float_coords), min_size=n, max_size=n))
            kinds[theirs] = "float" if float_coords else "text"
        else:
            values = draw(st.lists(maybe_text, min_size=n, max_size=n))
            kinds[theirs] = "text"
        columns[theirs] = values
    return Rows(columns, kinds)


@st.composite
def checkin_rows(
    draw: st.DrawFn, names: dict[str, str], known_ids: list, max_rows: int = 15
) -> Rows:
    """Hostile check-ins: known, unknown and missing item ids, odd times, repeated events."""
    n = draw(st.integers(0, max_rows))
    known = [str(v) for v in known_ids if v is not None]
    ref = st.one_of(*[st.sampled_from(known)] * 3, item_ids) if known else item_ids
    typed_time = draw(st.booleans())
    columns: dict[str, list] = {}
    kinds: dict[str, str] = {}
    for ours, theirs in names.items():
        if ours == "user_id":
            users = st.sampled_from(["u1", "u2", "u3", " u1"])
            values = draw(
                st.lists(st.one_of(users, users, users, maybe_text), min_size=n, max_size=n)
            )
        elif ours == "item_id":
            values = draw(st.lists(ref, min_size=n, max_size=n))
        elif ours == "timestamp":
            if typed_time:
                values = draw(st.lists(st.one_of(st.none(), when), min_size=n, max_size=n))
                kinds[theirs] = "timestamp"
            else:
                good = when.map(lambda t: t.isoformat())
                values = draw(
                    st.lists(
                        st.one_of(good, good, st.none(), timestamp_text), min_size=n, max_size=n
                    )
                )
        else:
            inside = inside_lat if ours == "latitude" else inside_lon
            values = draw(
                st.lists(
                    coordinate(inside).map(lambda v: None if v is None else str(v)),
                    min_size=n,
                    max_size=n,
                )
            )
        kinds.setdefault(theirs, "text")
        columns[theirs] = values
    if n and draw(st.booleans()):  # repeat a whole event
        for values in columns.values():
            values.append(values[0])
    return Rows(columns, kinds)


# ---------------------------------------------------------------------------------------------
# Writers


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def write_parquet(path: Path, rows: Rows) -> None:
    arrays = {}
    for name, values in rows.columns.items():
        kind = rows.kinds.get(name, "text")
        if kind == "float":
            arrays[name] = pa.array(values, type=pa.float64())
        elif kind == "int":
            arrays[name] = pa.array(values, type=pa.int64())
        elif kind == "timestamp":
            arrays[name] = pa.array(values, type=pa.timestamp("us", tz="UTC"))
        else:
            arrays[name] = pa.array([_as_text(v) for v in values], type=pa.string())
    pq.write_table(pa.table(arrays) if arrays else pa.table({}), path)


def write_csv(path: Path, rows: Rows) -> None:
    """RFC 4180 CSV (the csv module quotes fields holding commas, quotes, CR or LF).

    Not ``DataFrame.to_csv``: it leaves a bare CR unquoted, which no reader can tell from a
    line break.
    """
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(list(rows.columns))
        writer.writerows(
            zip(*([_as_text(v) or "" for v in vals] for vals in rows.columns.values()), strict=True)
        )


# ---------------------------------------------------------------------------------------------
# Properties


def check_reconciles(raw: pd.DataFrame, result: Validated, table: str, reasons: set[str]) -> None:
    """raw = clean + quarantined, row for row; every quarantine row has a documented reason."""
    clean, quarantine = result.clean, result.quarantine
    assert len(raw) == len(clean) + len(quarantine), (
        f"{table}: {len(raw)} raw rows != {len(clean)} clean + {len(quarantine)} quarantined"
    )
    assert raw["source_row"].notna().all() and raw["source_row"].is_unique
    back = pd.concat([clean["source_row"], quarantine["source_row"]]).astype(str)
    assert sorted(back) == sorted(raw["source_row"].astype(str)), f"{table}: rows lost or doubled"
    assert (quarantine["table_name"] == table).all()
    assert quarantine["reason"].notna().all()
    assert set(quarantine["reason"]) <= reasons, set(quarantine["reason"]) - reasons
    assert quarantine["detail"].notna().all()


def check_clean_items(items: pd.DataFrame) -> None:
    ids = items["item_id"]
    assert ids.notna().all() and ids.is_unique
    assert (ids.str.strip() == ids).all() and (ids.str.len() > 0).all()
    lat = items["latitude"].astype(float)
    lon = items["longitude"].astype(float)
    assert lat.map(math.isfinite).all() and lon.map(math.isfinite).all()
    assert lat.between(-90, 90).all() and lon.between(-180, 180).all()
    assert not ((lat == 0) & (lon == 0)).any()
    assert items["content_hash"].notna().all()
    inside = lat.between(LAT0 + 1e-9, LAT1 - 1e-9) & lon.between(LON0 + 1e-9, LON1 - 1e-9)
    assert items.loc[inside, "admin_l1_code"].notna().all(), "points in the city got no area"
    assert (items["outside"] == items["admin_l1_code"].isna()).all()


def check_clean_interactions(inter: pd.DataFrame, items: pd.DataFrame) -> None:
    assert set(inter["item_id"]) <= set(items["item_id"]), "check-in of an item that is not clean"
    assert inter["ts"].notna().all()
    if len(inter):
        assert str(inter["ts"].dt.tz) == "UTC"
    users = inter["user_id"]
    assert users.notna().all() and (users.str.strip() == users).all() and (users != "").all()
    assert not inter.duplicated(["user_id", "item_id", "ts"]).any()


def check_pipeline(data: SourceData, config: CityConfig) -> tuple[Validated, Validated]:
    """Clean a source's raw tables and check every property."""
    items = clean_items(data.items, config, "Fuzz City")
    check_reconciles(data.items, items, "items", ITEM_REASONS)
    check_clean_items(items.clean)
    inter = clean_interactions(data.interactions, items.clean, config.slug)
    check_reconciles(data.interactions, inter, "interactions", INTERACTION_REASONS)
    check_clean_interactions(inter.clean, items.clean)
    event(f"clean items > 0: {len(items.clean) > 0}")
    event(f"clean check-ins > 0: {len(inter.clean) > 0}")
    return items, inter


def check_derived_items(data: SourceData, n_file_items: int) -> None:
    """Item rows = the files' rows + one per check-in-only item id, all distinct and new."""
    derived = data.items[data.items["origin"] == "checkins"]
    assert len(data.items) - len(derived) == n_file_items
    ids = derived["item_id"]
    assert ids.is_unique and ids.notna().all()
    file_ids = set(data.items.loc[data.items["origin"] != "checkins", "item_id"].dropna())
    assert not set(ids) & file_ids
    assert set(ids) <= set(data.interactions["item_id"].dropna())
    referenced = set(data.interactions["item_id"].dropna()) - file_ids
    assert set(ids) == referenced, "a check-in-only item was not derived"


# ---------------------------------------------------------------------------------------------
# Landing folder (CSV and Parquet)

LANDING_ITEMS = {
    "item_id": "item_id",
    "name": "name",
    "category": "category",
    "brand": "brand",
    "latitude": "latitude",
    "longitude": "longitude",
}
LANDING_CHECKINS = {
    "user_id": "user_id",
    "item_id": "item_id",
    "timestamp": "timestamp",
    "latitude": "latitude",
    "longitude": "longitude",
}


@st.composite
def landing_folder(draw: st.DrawFn) -> list[tuple[str, str, Rows | None, str | None]]:
    """Files of a landing folder: (kind, format, rows or None for an empty file, dropped col)."""
    files = []
    for kind, names in (("items", LANDING_ITEMS), ("checkins", LANDING_CHECKINS)):
        for _ in range(draw(st.integers(0 if kind == "checkins" else 1, 2))):
            layout = dict(names)
            # Optional columns may be missing: category/brand of items, coordinates of check-ins.
            optional = ("category", "brand") if kind == "items" else ("latitude", "longitude")
            for col in optional:
                if draw(st.booleans()):
                    layout.pop(col)
            if kind == "items":
                rows = draw(item_rows(layout))
            else:
                known = [v for _, _, r, _ in files if r for v in r.columns.get("item_id", [])]
                rows = draw(checkin_rows(layout, known))
            dropped = None
            whole_file = draw(st.sampled_from(["ok"] * 14 + ["empty", "drop_required"]))
            if whole_file == "empty":
                rows = None
            elif whole_file == "drop_required":
                required = "latitude" if kind == "items" else "timestamp"
                rows.columns.pop(required)
                dropped = required
            files.append((kind, draw(st.sampled_from(["csv", "parquet"])), rows, dropped))
    return files


@FUZZ_SETTINGS
@given(files=landing_folder())
def test_landing_folder_reads_and_reconciles(files: list, boundaries: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-landing-") as tmp:
        folder = Path(tmp) / SLUG
        folder.mkdir()
        for number, (kind, fmt, rows, _) in enumerate(files):
            path = folder / f"{kind}-{number:02d}.{fmt}"
            if rows is None:
                path.write_bytes(b"")
            elif fmt == "csv":
                write_csv(path, rows)
            else:
                write_parquet(path, rows)
        config = CityConfig(SLUG, "landing", str(folder), boundaries=str(boundaries))
        whole_file_problem = any(rows is None or dropped for _, _, rows, dropped in files)
        try:
            data = read_city_source(config)
        except SourceError as exc:
            event("landing: SourceError")
            assert whole_file_problem, f"SourceError without a whole-file problem: {exc}"
            assert str(folder) in str(exc), f"the error does not name the file: {exc}"
            return
        assert not whole_file_problem, "an empty file or a missing column was read silently"
        n_items = sum(r.n for kind, _, r, _ in files if kind == "items")
        n_checkins = sum(r.n for kind, _, r, _ in files if kind == "checkins")
        assert len(data.interactions) == n_checkins
        check_derived_items(data, n_items)
        check_pipeline(data, config)


# ---------------------------------------------------------------------------------------------
# Two-table Parquet layouts (synthetic, Gowalla)

GOWALLA_ITEMS = {
    "item_id": "spot_id",
    "name": "spot_name",
    "latitude": "latitude",
    "longitude": "longitude",
    "display_name": "city",
}
GOWALLA_CHECKINS = {
    "user_id": "user_id",
    "item_id": "spot_id",
    "timestamp": "utc_time",
    "latitude": "latitude",
    "longitude": "longitude",
}


@st.composite
def table_source(draw: st.DrawFn) -> tuple[str, Rows, Rows, str | None]:
    source = draw(st.sampled_from(["synthetic", "gowalla"]))
    item_names = dict(LANDING_ITEMS if source == "synthetic" else GOWALLA_ITEMS)
    checkin_names = dict(LANDING_CHECKINS if source == "synthetic" else GOWALLA_CHECKINS)
    if source == "synthetic" and draw(st.booleans()):  # optional check-in coordinates
        checkin_names.pop("latitude")
        checkin_names.pop("longitude")
    items = draw(item_rows(item_names))
    checkins = draw(checkin_rows(checkin_names, items.columns[item_names["item_id"]]))
    problem = draw(
        st.sampled_from([None] * 12 + ["empty_items", "empty_checkins", "no_item_id", "no_user_id"])
    )
    return source, items, checkins, problem


@FUZZ_SETTINGS
@given(case=table_source())
def test_table_sources_read_and_reconcile(case: tuple, boundaries: Path) -> None:
    source, items, checkins, problem = case
    with tempfile.TemporaryDirectory(prefix="fuzz-tables-") as tmp:
        folder = Path(tmp)
        items_file = "items.parquet" if source == "synthetic" else "spots.parquet"
        if problem == "no_item_id":
            items.columns.pop("item_id" if source == "synthetic" else "spot_id")
        if problem == "no_user_id":
            checkins.columns.pop("user_id")
        write_parquet(folder / items_file, items)
        write_parquet(folder / "checkins.parquet", checkins)
        if problem == "empty_items":
            (folder / items_file).write_bytes(b"")
        if problem == "empty_checkins":
            (folder / "checkins.parquet").write_bytes(b"")
        config = CityConfig(SLUG, source, str(folder), boundaries=str(boundaries))
        try:
            data = read_city_source(config)
        except SourceError as exc:
            event("tables: SourceError")
            assert problem is not None, f"SourceError without a whole-file problem: {exc}"
            assert str(folder) in str(exc), f"the error does not name the file: {exc}"
            return
        assert problem is None, f"{problem} was read silently"
        assert len(data.interactions) == checkins.n
        check_derived_items(data, items.n)
        check_pipeline(data, config)


# ---------------------------------------------------------------------------------------------
# TSMC2014 tab-separated text


@st.composite
def tsmc_lines(draw: st.DrawFn) -> list[bytes]:
    """TSMC2014 lines: mostly 8 fields, some ragged, some with Latin-1 or broken UTF-8 bytes."""
    venues = draw(st.lists(st.one_of(st.sampled_from(ID_POOL), any_text), min_size=1, max_size=5))
    lines = []
    for _ in range(draw(st.integers(0, 15))):
        fields = [
            draw(st.one_of(st.sampled_from(["1", "2", " 3 "]), maybe_text)),
            draw(st.one_of(st.sampled_from(venues), maybe_text)),
            draw(st.one_of(st.just("4bf58dd8d48988d1e0931735"), maybe_text)),
            draw(st.one_of(st.sampled_from(["Café", "Coffee Shop", "Bar"]), maybe_text)),
            _as_text(draw(coordinate(inside_lat))),
            _as_text(draw(coordinate(inside_lon))),
            draw(st.sampled_from(["540", "-240", "", "x"])),
            draw(
                st.one_of(
                    when.map(lambda t: t.strftime("%a %b %d %H:%M:%S +0000 %Y")), timestamp_text
                )
            ),
        ]
        fields = ["" if f is None else f.replace("\n", " ") for f in fields]
        shape = draw(st.sampled_from(["ok"] * 6 + ["short", "long"]))
        if shape == "short":
            fields = fields[: draw(st.integers(0, 7))]
        elif shape == "long":
            fields = [*fields, "extra"]
        line = "\t".join(fields)
        encoding = draw(st.sampled_from(["utf-8"] * 5 + ["latin-1", "broken"]))
        if encoding == "latin-1":
            data = line.encode("latin-1", errors="replace")
        elif encoding == "broken":
            data = line.encode("utf-8") + b"\xff\xfe"
        else:
            data = line.encode("utf-8")
        lines.append(data + draw(st.sampled_from([b"", b"\r"])))
    return lines


@FUZZ_SETTINGS
@given(lines=tsmc_lines(), trailing_newline=st.booleans())
def test_tsmc_reads_and_reconciles(
    lines: list[bytes], trailing_newline: bool, boundaries: Path
) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-tsmc-") as tmp:
        path = Path(tmp) / "dataset_TSMC2014_FUZZ.txt"
        content = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
        path.write_bytes(content)
        config = CityConfig(SLUG, "foursquare-tsmc", str(path), boundaries=str(boundaries))
        try:
            data = read_city_source(config)
        except SourceError as exc:
            assert not content, f"SourceError on a non-empty file: {exc}"
            assert str(path) in str(exc)
            return
        assert content, "an empty file was read silently"
        # One row per line; a final newline ends the last line rather than starting one.
        n_lines = content.count(b"\n") + (0 if content.endswith(b"\n") else 1)
        assert len(data.interactions) == n_lines, "a line was lost or split"
        assert data.items["item_id"].is_unique
        assert set(data.items["item_id"]) <= set(data.interactions["item_id"].dropna())
        check_pipeline(data, config)


# ---------------------------------------------------------------------------------------------
# GETNext/STHGCN split files (CSV with a header)

STHGCN_HEADER = (
    "user_id,POI_id,POI_catid,POI_catid_code,POI_catname,latitude,longitude,"
    "timezone,UTC_time,local_time,day_of_week,norm_in_day_time,trajectory_id,"
    "norm_day_shift,norm_relative_time"
)
STHGCN_FILES = {"train": "NYC_train.csv", "valid": "NYC_val.csv", "test": "NYC_test.csv"}


def _csv_field(value: str, quoted: bool) -> str:
    return '"' + value.replace('"', '""') + '"' if quoted else value


@st.composite
def sthgcn_lines(draw: st.DrawFn) -> list[bytes]:
    """Data lines of one split file: mostly 15 fields, some ragged, quoted or with bad bytes."""
    venues = draw(st.lists(st.one_of(st.sampled_from(ID_POOL), any_text), min_size=1, max_size=4))
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        fields = [
            draw(st.one_of(st.sampled_from(["1", "2", " 3 "]), maybe_text)),
            draw(st.one_of(st.sampled_from(venues), maybe_text)),
            draw(st.one_of(st.just("4bf58dd8d48988d1e0931735"), maybe_text)),
            "7",
            draw(st.one_of(st.sampled_from(["Café", "Coffee Shop", "Bar, Pub"]), maybe_text)),
            _as_text(draw(coordinate(inside_lat))),
            _as_text(draw(coordinate(inside_lon))),
            "-240",
            draw(
                st.one_of(when.map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S+00:00")), timestamp_text)
            ),
            "2012-04-03 14:00:30-04:00",
            "1",
            "0.5",
            draw(st.one_of(st.sampled_from(["1_1", "1_2", "2_1"]), maybe_text)),
            "0",
            "0.5",
        ]
        fields = ["" if f is None else f.replace("\n", " ") for f in fields]
        shape = draw(st.sampled_from(["ok"] * 6 + ["short", "long"]))
        if shape == "short":
            fields = fields[: draw(st.integers(0, 14))]
        elif shape == "long":
            fields = [*fields, "extra"]
        quoted = draw(st.booleans())
        line = ",".join(_csv_field(f, quoted) for f in fields)
        encoding = draw(st.sampled_from(["utf-8"] * 5 + ["broken"]))
        data = line.encode("utf-8") + (b"\xff\xfe" if encoding == "broken" else b"")
        lines.append(data + draw(st.sampled_from([b"", b"\r"])))
    return lines


@FUZZ_SETTINGS
@given(files=st.fixed_dictionaries({split: sthgcn_lines() for split in STHGCN_FILES}))
def test_sthgcn_reads_and_reconciles(files: dict[str, list[bytes]], boundaries: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-sthgcn-") as tmp:
        folder = Path(tmp)
        for split, name in STHGCN_FILES.items():
            (folder / name).write_bytes(b"\n".join([STHGCN_HEADER.encode(), *files[split]]) + b"\n")
        config = CityConfig(SLUG, "foursquare-sthgcn", str(folder), boundaries=str(boundaries))
        try:
            data = read_city_source(config)
        except SourceError as exc:
            assert not any(files.values()), f"SourceError with data lines: {exc}"
            assert str(folder) in str(exc)
            return
        inter = data.interactions
        assert [len(inter[inter["split"] == s]) for s in STHGCN_FILES] == [
            len(files[s]) for s in STHGCN_FILES
        ], "a line was lost or split"
        assert inter["source_row"].tolist() == [
            f"{name}:{n}"
            for split, name in STHGCN_FILES.items()
            for n in range(2, len(files[split]) + 2)
        ]
        assert data.items["item_id"].is_unique
        assert set(data.items["item_id"]) <= set(inter["item_id"].dropna())
        _, clean = check_pipeline(data, config)
        assert set(clean.clean["split"].dropna()) <= set(STHGCN_FILES)
