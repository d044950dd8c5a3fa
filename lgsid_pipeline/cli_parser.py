"""The ``lgsid`` argument parser: every sub-command, option, type, range and help text.

Each option is checked while parsing (the types are in :mod:`lgsid_pipeline.cli_args`), before
any work; the sub-commands themselves are in :mod:`lgsid_pipeline.cli`, which looks them up by
the parsed ``command``.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

from lgsid_pipeline.catalog import TOKENIZER_KINDS
from lgsid_pipeline.cities import ENCODINGS, SOURCES
from lgsid_pipeline.cli_args import (
    BOUNDARY_REGIONS,
    K_RANGE,
    LIMIT_RANGE,
    MAX_CODE,
    MAX_TEXT,
    PARALLEL_RANGE,
    RUN_CONFIG_KEYS,
    SEED_RANGE,
    SPLIT_YEARS,
    SYNTH_ITEMS_RANGE,
    Parser,
    boundaries,
    city_slug,
    float_in,
    int_in,
    out_folder,
    run_config_file,
    split_time,
    text_of,
)
from lgsid_pipeline.config import PARALLEL_CITIES
from lgsid_pipeline.lookup import cached_recommendations, lookup_code
from lgsid_pipeline.quality import MAX_QUARANTINE_RATE
from lgsid_pipeline.warehouse import VERSIONED_STAGES

DESCRIPTION = "The ``lgsid`` command: register cities, materialize, report."


def _library_default(function: Callable[..., Any], parameter: str) -> Any:
    """A library function's default for ``parameter``: the option uses and shows it."""
    return inspect.signature(function).parameters[parameter].default


def build_parser() -> argparse.ArgumentParser:
    """The ``lgsid`` argument parser; every option is checked here, before any work."""
    parallel = int_in(*PARALLEL_RANGE)
    parallel_help = (
        f"cities run at once, {PARALLEL_RANGE[0]}..{PARALLEL_RANGE[1]} (default %(default)s)"
    )
    slug_help = "city slug: 1..64 characters of a-z, 0-9, '_' and '-', starting with a-z or 0-9"
    text = text_of(MAX_TEXT)
    json_help = "print JSON"
    city: dict[str, Any] = {
        "required": True,
        "type": city_slug,
        "metavar": "SLUG",
        "help": slug_help + "; registered",
    }

    parser = Parser(prog="lgsid", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate the synthetic demo cities and materialize them")
    p.add_argument(
        "--parallel", type=parallel, default=PARALLEL_CITIES, metavar="N", help=parallel_help
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="train every model with the assets' default budgets instead of the demo's small "
        "ones (much longer)",
    )

    p = sub.add_parser("add-city", help="register a city partition and its data source")
    # Checked by the command itself (exit code 2), as are --path and its kind.
    p.add_argument("slug", help=slug_help)
    p.add_argument(
        "--source",
        required=True,
        choices=SOURCES,
        help=f"data source kind, one of: {', '.join(SOURCES)}",
    )
    p.add_argument(
        "--path",
        required=True,
        help="existing source file (foursquare-tsmc: the TSMC2014 .txt) or folder "
        "(gowalla, synthetic, landing: Parquet files; foursquare-sthgcn: "
        "NYC_{train,val,test}.csv)",
    )
    p.add_argument(
        "--boundaries",
        type=boundaries,
        default=None,
        metavar="REGION_OR_FOLDER",
        help=f"admin boundaries: {', '.join(BOUNDARY_REGIONS)}, or an existing "
        "folder of admin_level*.geojson (default: detect)",
    )
    p.add_argument(
        "--encoding",
        default="auto",
        choices=ENCODINGS,
        help=f"text encoding of the source, one of: {', '.join(ENCODINGS)}",
    )
    p.add_argument(
        "--name",
        type=text_of(100),
        default=None,
        help="display name used in prompts, 1..100 characters",
    )

    p = sub.add_parser("remove-city", help="unregister a city")
    p.add_argument("slug", type=city_slug, help=slug_help + "; must be registered")
    p.add_argument("--delete-data", action="store_true", help="also delete its tables")

    p = sub.add_parser("cities", help="list registered cities")
    p.add_argument("--json", action="store_true", help=json_help)

    p = sub.add_parser("materialize", help="materialize per-city assets")
    p.add_argument(
        "--city",
        action="append",
        type=city_slug,
        metavar="SLUG",
        help=f"{slug_help}; registered (repeatable; default: all)",
    )
    p.add_argument(
        "--select",
        type=text,
        default=None,
        help="Dagster asset selection, e.g. '*interactions' or 'items+' or "
        f"'raw_items,items', 1..{MAX_TEXT} characters (default: every "
        "per-city asset)",
    )
    p.add_argument(
        "--parallel", type=parallel, default=PARALLEL_CITIES, metavar="N", help=parallel_help
    )
    p.add_argument(
        "--max-quarantine-rate",
        type=float_in(0.0, 1.0),
        default=None,
        metavar="RATE",
        help="quarantine share above which the blocking checks fail, 0..1 "
        f"(default {MAX_QUARANTINE_RATE})",
    )
    p.add_argument(
        "--config",
        type=run_config_file,
        default=None,
        metavar="FILE",
        help="existing YAML/JSON file of at most 1 MiB holding Dagster run config: "
        f"a mapping with keys among {', '.join(RUN_CONFIG_KEYS)} (ops: "
        "per-asset training settings; resources: workspace settings such as "
        "encoder_path)",
    )
    p.add_argument(
        "--full-ingest",
        action="store_true",
        help="read and clean each city's whole source even when no source, landed or "
        "boundary file changed (default: unchanged sources are not read, new landed files "
        "are merged into the published tables)",
    )
    years = f"years {SPLIT_YEARS[0]}..{SPLIT_YEARS[1]}"
    p.add_argument(
        "--split-t1",
        type=split_time,
        default=None,
        metavar="TIME",
        help="recommender split: validation starts at this ISO 8601 date or time "
        f"(e.g. 2025-02-01 or 2025-02-01T12:00:00Z; no zone: UTC; {years}); "
        "before --split-t2",
    )
    p.add_argument(
        "--split-t2",
        type=split_time,
        default=None,
        metavar="TIME",
        help="recommender split: test starts at this ISO 8601 date or time "
        f"(no zone: UTC; {years}); after --split-t1",
    )

    p = sub.add_parser("report", help="latest figures of one city")
    p.add_argument("--city", **city)
    p.add_argument("--json", action="store_true", help=json_help)

    p = sub.add_parser(
        "retrain",
        help="retrain the global models stage by stage, rebuilding "
        "each city's inputs between them (as the weekly "
        "schedule does)",
    )
    p.add_argument(
        "--config",
        type=run_config_file,
        default=None,
        metavar="FILE",
        help="existing YAML/JSON file of at most 1 MiB holding Dagster run config "
        f"applied to every stage: a mapping with keys among "
        f"{', '.join(RUN_CONFIG_KEYS)}",
    )

    p = sub.add_parser("rollback", help="point a city's stage back at its previous version")
    p.add_argument("--city", **city)
    p.add_argument(
        "--stage",
        default="ingest",
        choices=tuple(VERSIONED_STAGES),
        help=f"versioned stage, one of: {', '.join(VERSIONED_STAGES)} (default %(default)s)",
    )

    p = sub.add_parser("lookup", help="an item's semantic ID, or the items under a code")
    p.add_argument("--city", **city)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--item", type=text, help=f"item id, 1..{MAX_TEXT} characters")
    # Checked by the command itself (exit code 2).
    what.add_argument(
        "--code",
        help="full code (12-7-3-0) or prefix (12-7): non-negative integers "
        f"joined by '-', 1..{MAX_CODE} characters",
    )
    p.add_argument(
        "--tokenizer",
        default=_library_default(lookup_code, "tokenizer"),
        choices=TOKENIZER_KINDS,
        help="tokenizer whose codes are looked up, one of: "
        f"{', '.join(TOKENIZER_KINDS)} (default %(default)s)",
    )
    p.add_argument(
        "--limit",
        type=int_in(*LIMIT_RANGE),
        default=_library_default(lookup_code, "limit"),
        metavar="N",
        help=f"items listed under a prefix, {LIMIT_RANGE[0]}..{LIMIT_RANGE[1]} "
        "(default %(default)s)",
    )
    p.add_argument("--json", action="store_true", help=json_help)

    p = sub.add_parser("recommend", help="a user's cached top-K items (user_topk_cache)")
    p.add_argument("--city", **city)
    p.add_argument(
        "--user",
        required=True,
        type=text,
        help=f"user id as in the check-ins, 1..{MAX_TEXT} characters",
    )
    p.add_argument(
        "--k",
        type=int_in(*K_RANGE),
        default=_library_default(cached_recommendations, "k"),
        metavar="K",
        help=f"items shown, {K_RANGE[0]}..{K_RANGE[1]} (default %(default)s; the "
        "cache holds as many per user as user_topk_cache was built with)",
    )
    p.add_argument("--json", action="store_true", help=json_help)

    p = sub.add_parser("synth", help="write a synthetic city's source files to a folder")
    p.add_argument(
        "--out",
        required=True,
        type=out_folder,
        metavar="FOLDER",
        help="output folder: existing, or created (not a file, nor under one)",
    )
    p.add_argument(
        "--name",
        type=text_of(100),
        default="Synthville",
        help="city name, 1..100 characters (default %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int_in(*SEED_RANGE),
        default=1,
        metavar="N",
        help=f"random seed, {SEED_RANGE[0]}..{SEED_RANGE[1]} (default %(default)s)",
    )
    p.add_argument(
        "--items",
        type=int_in(*SYNTH_ITEMS_RANGE),
        default=2000,
        metavar="N",
        help=f"number of items, {SYNTH_ITEMS_RANGE[0]}..{SYNTH_ITEMS_RANGE[1]} "
        "(default %(default)s)",
    )
    return parser
