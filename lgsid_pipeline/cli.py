"""The ``lgsid`` command: register cities, materialize, report."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lgsid_pipeline.catalog import TOKENIZER_KINDS
from lgsid_pipeline.cities import ENCODINGS, SOURCES, CityConfig, CityRegistry, check_source_path
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
    CliError,
    Parser,
    boundaries,
    check_run,
    city_slug,
    float_in,
    int_in,
    out_folder,
    run_config_file,
    split_time,
    text_of,
    utc,
)
from lgsid_pipeline.config import (
    PARALLEL_CITIES,
    InvalidCityError,
    validate_city_slug,
)
from lgsid_pipeline.lookup import cached_recommendations, lookup_code
from lgsid_pipeline.quality import MAX_QUARANTINE_RATE
from lgsid_pipeline.warehouse import VERSIONED_STAGES, TableNotFoundError, Warehouse


def _cmd_add_city(args: argparse.Namespace) -> int:
    from lgsid_pipeline.runner import get_instance, sync_city_partitions

    validate_city_slug(args.slug)
    path = check_source_path(args.source, Path(args.path))
    config = CityConfig(
        slug=args.slug,
        source=args.source,
        path=str(path),
        boundaries=args.boundaries,
        encoding=args.encoding,
        display_name=args.name,
    )
    registry = CityRegistry()
    registry.add(config)
    sync_city_partitions(get_instance(), registry)
    print(f"registered city {args.slug!r}: {args.source} from {path}")
    return 0


def _cmd_cities(args: argparse.Namespace) -> int:
    cities = CityRegistry().all()
    if args.json:
        print(json.dumps([c.__dict__ for c in cities], indent=2))
    else:
        for c in cities:
            print(f"{c.slug:20s} {c.source:16s} {c.path}")
    return 0


def _cmd_remove_city(args: argparse.Namespace) -> int:
    from lgsid_pipeline.runner import get_instance

    registry = CityRegistry()
    registry.remove(args.slug)
    instance = get_instance()
    if args.slug in instance.get_dynamic_partitions("city"):
        instance.delete_dynamic_partition("city", args.slug)
    removed = Warehouse().delete_city(args.slug) if args.delete_data else 0
    print(f"removed city {args.slug!r}" + (f" and {removed} table files" if removed else ""))
    return 0


def _run(
    cities: list[str], select: str | None, parallel: int, run_config: dict | None = None
) -> int:
    from lgsid_pipeline.runner import materialize

    check_run(select, run_config)
    started = time.perf_counter()
    results = materialize(cities, select=select, parallel=parallel, run_config=run_config)
    seconds = time.perf_counter() - started
    for r in results:
        state = "ok" if r.success else f"FAILED ({', '.join(r.failed_steps) or 'see the UI'})"
        if r.failed_checks:
            state += f"; failed checks: {', '.join(r.failed_checks)}"
        print(f"{r.city}: {state}  run {r.run_id}")
    print(f"{len(results)} runs for {len(cities)} cities in {seconds:.1f}s")
    return 0 if all(r.success for r in results) else 1


def _load_run_config(parsed: dict | None, max_quarantine_rate: float | None) -> dict | None:
    """The run config parsed from ``--config`` (see ``run_config_file``), plus the
    quarantine limit if given."""
    from lgsid_pipeline.runner import quarantine_config

    config: dict = dict(parsed or {})
    extra = quarantine_config(max_quarantine_rate)
    if extra:
        lgsid = config.setdefault("resources", {}).setdefault("lgsid", {})
        lgsid.setdefault("config", {}).update(extra["resources"]["lgsid"]["config"])
    return config or None


def _cmd_materialize(args: argparse.Namespace) -> int:
    if args.split_t1 and args.split_t2 and not utc(args.split_t1) < utc(args.split_t2):
        raise CliError(f"--split-t1 {args.split_t1} must be before --split-t2 {args.split_t2}")
    registry = CityRegistry()
    cities = list(dict.fromkeys(args.city)) if args.city else [c.slug for c in registry.all()]
    if not cities:
        raise CliError("no cities registered; add one with `lgsid add-city` or run `lgsid demo`")
    for city in cities:
        registry.get(city)  # clear error for an unknown city before anything runs
    config = _load_run_config(args.config, args.max_quarantine_rate) or {}
    split = {k: v for k, v in (("t1", args.split_t1), ("t2", args.split_t2)) if v}
    if split:
        ops = config.setdefault("ops", {}).setdefault("recommender_datasets", {})
        ops.setdefault("config", {}).update(split)
    return _run(cities, args.select, args.parallel, config or None)


def _cmd_demo(args: argparse.Namespace) -> int:
    from lgsid_pipeline.demo.run import run_demo

    return run_demo(args.parallel)


def _cmd_report(args: argparse.Namespace) -> int:
    from lgsid_pipeline.report import city_report

    config = CityRegistry().get(args.city)
    report = city_report(
        Warehouse(), args.city, source={"kind": config.source, "path": config.path}
    )
    if "items" not in report:
        raise CliError(
            f"city {args.city!r} has no materialized items yet; run "
            f"`lgsid materialize --city {args.city}`"
        )
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for section, values in report.items():
            print(f"{section}: {values}")
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from lgsid_pipeline.retrain import RETRAIN_STAGES
    from lgsid_pipeline.runner import retrain

    if not CityRegistry().all():
        raise CliError("no cities registered; add one with `lgsid add-city` or run `lgsid demo`")
    config = _load_run_config(args.config, None)
    check_run(",".join(name for stage in RETRAIN_STAGES for name in stage.assets), config)
    started = time.perf_counter()
    print("stages: " + " -> ".join(stage.name for stage in RETRAIN_STAGES))
    results, step = retrain(run_config=config)
    for r in results:
        state = "ok" if r.success else f"FAILED ({', '.join(r.failed_steps) or 'see the UI'})"
        if r.failed_checks:
            state += f"; failed checks: {', '.join(r.failed_checks)}"
        print(f"{r.city}: {state}  run {r.run_id}")
    print(
        f"retrain {step.state}: {step.reason} ({len(results)} runs in "
        f"{time.perf_counter() - started:.1f}s)"
    )
    return 0 if step.state == "done" else 1


def _cmd_rollback(args: argparse.Namespace) -> int:
    CityRegistry().get(args.city)  # clear error for an unknown city
    pointer = Warehouse().rollback(args.city, args.stage)
    print(
        f"{args.city}: {args.stage} rolled back from {pointer['rolled_back_from']} to "
        f"{pointer['version']} ({len(pointer['history'])} older versions left)"
    )
    return 0


def _print_item(row: dict) -> None:
    print(f"{row['code']:>16s}  {row['item_id']}  {row['name']}  [{row['admin_path']}]")


def _cmd_lookup(args: argparse.Namespace) -> int:
    from lgsid_pipeline.lookup import lookup_item
    from lgsid_pipeline.tokenizer.codes import parse_code

    if args.code is not None:
        if len(args.code) > MAX_CODE:
            raise CliError(f"invalid code: {len(args.code)} characters; at most {MAX_CODE}")
        parse_code(args.code)  # a clear ValueError for a malformed code
    CityRegistry().get(args.city)  # clear error for an unknown city
    warehouse = Warehouse()
    if args.item is not None:
        row = lookup_item(warehouse, args.city, args.item, args.tokenizer)
        if row is None:
            raise CliError(f"city {args.city!r} has no item {args.item!r}")
        if args.json:
            print(json.dumps(row, indent=2, default=str))
        else:
            _print_item(row)
        return 0
    total, rows = lookup_code(warehouse, args.city, args.code, args.tokenizer, args.limit)
    if args.json:
        print(
            json.dumps({"code": args.code, "matches": total, "items": rows}, indent=2, default=str)
        )
    else:
        print(
            f"{total} items under {args.code} ({args.tokenizer})"
            + (f"; first {len(rows)}" if total > len(rows) else "")
        )
        for row in rows:
            _print_item(row)
    return 0 if total else 1


def _cmd_recommend(args: argparse.Namespace) -> int:
    from lgsid_pipeline.lookup import UnknownUserError

    CityRegistry().get(args.city)
    try:
        rows = cached_recommendations(Warehouse(), args.city, args.user, args.k)
    except UnknownUserError as exc:
        print(f"lgsid: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps({"city": args.city, "user": args.user, "items": rows}, indent=2, default=str)
        )
    else:
        print(f"served by {rows[0]['model']} (refreshed {rows[0]['refreshed_at']})")
        for row in rows:
            print(
                f"{row['rank']:>3d}  {row['code']:>16s}  {row['score']:8.4f}  "
                f"{row['item_id']}  {row['name']}"
            )
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lgsid_pipeline.demo import SyntheticCitySpec, generate_city

    spec = SyntheticCitySpec(name=args.name, seed=args.seed, n_items=args.items)
    counts = generate_city(spec, args.out)
    print(json.dumps(counts))
    return 0


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

    parser = Parser(prog="lgsid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate the synthetic demo cities and materialize them")
    p.add_argument(
        "--parallel", type=parallel, default=PARALLEL_CITIES, metavar="N", help=parallel_help
    )
    p.set_defaults(func=_cmd_demo)

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
    p.set_defaults(func=_cmd_add_city)

    p = sub.add_parser("remove-city", help="unregister a city")
    p.add_argument("slug", type=city_slug, help=slug_help + "; must be registered")
    p.add_argument("--delete-data", action="store_true", help="also delete its tables")
    p.set_defaults(func=_cmd_remove_city)

    p = sub.add_parser("cities", help="list registered cities")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=_cmd_cities)

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
        "per-asset training settings; resources: lgsid settings such as "
        "encoder_path)",
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
    p.set_defaults(func=_cmd_materialize)

    p = sub.add_parser("report", help="latest figures of one city")
    p.add_argument("--city", **city)
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=_cmd_report)

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
    p.set_defaults(func=_cmd_retrain)

    p = sub.add_parser("rollback", help="point a city's stage back at its previous version")
    p.add_argument("--city", **city)
    p.add_argument(
        "--stage",
        default="ingest",
        choices=tuple(VERSIONED_STAGES),
        help=f"versioned stage, one of: {', '.join(VERSIONED_STAGES)} (default %(default)s)",
    )
    p.set_defaults(func=_cmd_rollback)

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
    p.set_defaults(func=_cmd_lookup)

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
    p.set_defaults(func=_cmd_recommend)

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
    p.set_defaults(func=_cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lgsid`` console script."""
    args = build_parser().parse_args(argv)  # bad options: one line, SystemExit(2)
    try:
        return args.func(args)
    except (CliError, InvalidCityError, FileNotFoundError, TableNotFoundError, ValueError) as exc:
        # Known errors found later (unknown city, no tables, bad selection): one line.
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"lgsid: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
