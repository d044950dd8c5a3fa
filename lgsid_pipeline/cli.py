"""The ``lgsid`` command: register cities, materialize, report.

The sub-commands and the entry point (:func:`main`); the argument parser, with every option
and its checks, is in :mod:`lgsid_pipeline.cli_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lgsid_pipeline.cities import CityConfig, CityRegistry, check_source_path
from lgsid_pipeline.cli_args import MAX_CODE, CliError, check_run, utc
from lgsid_pipeline.cli_parser import build_parser
from lgsid_pipeline.config import InvalidCityError, validate_city_slug
from lgsid_pipeline.lookup import cached_recommendations, lookup_code
from lgsid_pipeline.model_files import ModelFileError
from lgsid_pipeline.warehouse import TableNotFoundError, Warehouse


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
        workspace = config.setdefault("resources", {}).setdefault("workspace", {})
        workspace.setdefault("config", {}).update(extra["resources"]["workspace"]["config"])
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
    if args.full_ingest:
        ingest = config.setdefault("ops", {}).setdefault("ingest_tables", {})
        ingest.setdefault("config", {})["full"] = True
    return _run(cities, args.select, args.parallel, config or None)


def _cmd_demo(args: argparse.Namespace) -> int:
    from lgsid_pipeline.demo.run import run_demo

    return run_demo(args.parallel, full=args.full)


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
    from lgsid_pipeline.tokenizer.semantic_ids import parse_code

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


# The function behind each sub-command of :func:`build_parser` (its parsed ``command``).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _cmd_demo,
    "add-city": _cmd_add_city,
    "remove-city": _cmd_remove_city,
    "cities": _cmd_cities,
    "materialize": _cmd_materialize,
    "report": _cmd_report,
    "retrain": _cmd_retrain,
    "rollback": _cmd_rollback,
    "lookup": _cmd_lookup,
    "recommend": _cmd_recommend,
    "synth": _cmd_synth,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lgsid`` console script."""
    args = build_parser().parse_args(argv)  # bad options: one line, SystemExit(2)
    try:
        return COMMANDS[args.command](args)
    except (
        CliError,
        InvalidCityError,
        FileNotFoundError,
        TableNotFoundError,
        ModelFileError,
        ValueError,
    ) as exc:
        # Known errors found later (unknown city, no tables, bad selection): one line.
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"lgsid: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
