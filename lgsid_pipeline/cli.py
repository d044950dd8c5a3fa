"""The ``lgsid`` command: register cities, materialize, report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lgsid_pipeline.cities import ENCODINGS, SOURCES, CityConfig, CityRegistry, check_source_path
from lgsid_pipeline.config import InvalidCityError, lgsid_home, validate_city_slug
from lgsid_pipeline.warehouse import TableNotFoundError, Warehouse

# The demo trains every model on three cities with the real encoder; smaller samples keep
# it to a few minutes on a laptop. `lgsid materialize` uses the full defaults.
DEMO_RUN_CONFIG = {
    "ops": {
        "geo_negatives": {"config": {"max_anchors": 800}},
        "geo_pairs": {"config": {"n_anchors": 600}},
        "aligned_encoder": {"config": {"steps": 60, "max_dc_triples": 600,
                                       "max_gc_triples": 600}},
        "recommender_datasets": {"config": {"max_train_positives": 3000,
                                            "max_eval_positives": 1000}},
        **{backbone: {"config": {"epochs": 3, "dim": 16}}
           for backbone in ("din", "dien", "sim", "twin", "eta")},
        **{name: {"config": {"steps": 300, "eval_every": 100, "beam_size": 10,
                             "max_train_examples": 3000, "max_valid_eval": 200,
                             "max_test_examples": 300}}
           for name in ("tiger", "onerec", "generative_baseline")},
    },
    "resources": {"lgsid": {"config": {"torch_threads": 1}}},
}


class CliError(Exception):
    """An error worth one clear line and exit code 2."""


def _cmd_add_city(args: argparse.Namespace) -> int:
    from lgsid_pipeline.runner import get_instance, sync_city_partitions

    validate_city_slug(args.slug)
    path = check_source_path(args.source, Path(args.path))
    config = CityConfig(slug=args.slug, source=args.source, path=str(path),
                        boundaries=args.boundaries, encoding=args.encoding,
                        display_name=args.name)
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


def _run(cities: list[str], select: str | None, parallel: int,
         run_config: dict | None = None) -> int:
    from lgsid_pipeline.runner import materialize

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


def _load_run_config(path: str | None, max_quarantine_rate: float | None) -> dict | None:
    """Run config from a YAML/JSON file, plus the quarantine limit if given."""
    import yaml

    from lgsid_pipeline.runner import quarantine_config

    config: dict = {}
    if path:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"run config file not found: {file}")
        config = yaml.safe_load(file.read_text()) or {}
        if not isinstance(config, dict):
            raise CliError(f"run config {file} must be a mapping with 'ops' and/or 'resources'")
    extra = quarantine_config(max_quarantine_rate)
    if extra:
        lgsid = config.setdefault("resources", {}).setdefault("lgsid", {})
        lgsid.setdefault("config", {}).update(extra["resources"]["lgsid"]["config"])
    return config or None


def _cmd_materialize(args: argparse.Namespace) -> int:
    registry = CityRegistry()
    cities = args.city or [c.slug for c in registry.all()]
    if not cities:
        raise CliError("no cities registered; add one with `lgsid add-city` or run `lgsid demo`")
    config = _load_run_config(args.config, args.max_quarantine_rate) or {}
    split = {k: v for k, v in (("t1", args.split_t1), ("t2", args.split_t2)) if v}
    if split:
        ops = config.setdefault("ops", {}).setdefault("recommender_datasets", {})
        ops.setdefault("config", {}).update(split)
    return _run(cities, args.select, args.parallel, config or None)


def _print_counts(cities: list[str]) -> None:
    from lgsid_pipeline.report import city_report

    warehouse = Warehouse()
    print(f"{'city':16s} {'items':>8s} {'interactions':>13s} {'quarantined':>12s} "
          f"{'admin L1':>9s} {'admin L2':>9s} {'C@10 before -> after':>22s}")
    for city in cities:
        r = city_report(warehouse, city)
        items, inter = r.get("items", {}), r.get("interactions", {})
        align = r.get("alignment", {})
        geo = (f"{align['before']['c_at_10']:.3f} -> {align['after']['c_at_10']:.3f}"
               if "after" in align else "-")
        print(f"{city:16s} {items.get('rows', 0):>8d} {inter.get('rows', 0):>13d} "
              f"{sum(r['quarantine'].values()):>12d} {items.get('admin_level1_share', 0):>9.1%} "
              f"{items.get('admin_level2_share', 0):>9.1%} {geo:>22s}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from lgsid_pipeline.runner import get_instance, sync_city_partitions
    from lgsid_pipeline.sources.synthetic import DEMO_CITIES, generate_city

    registry = CityRegistry()
    for slug, spec in DEMO_CITIES.items():
        folder = lgsid_home() / "synthetic" / slug
        if not (folder / "manifest.json").is_file():
            counts = generate_city(spec, folder)
            print(f"generated {slug}: {counts['items']} items, {counts['checkins']} check-ins")
        registry.add(CityConfig(slug=slug, source="synthetic", path=str(folder),
                                display_name=spec.name))
    sync_city_partitions(get_instance(), registry)
    code = _run(list(DEMO_CITIES), None, args.parallel, DEMO_RUN_CONFIG)
    _print_counts(list(DEMO_CITIES))
    print("\nOpen the Dagster UI with `make ui` (http://127.0.0.1:3000); "
          "figures per city: `lgsid report --city <slug> --json`.")
    return code


def _cmd_report(args: argparse.Namespace) -> int:
    from lgsid_pipeline.report import city_report

    config = CityRegistry().get(args.city)
    report = city_report(Warehouse(), args.city,
                         source={"kind": config.source, "path": config.path})
    if "items" not in report:
        raise CliError(f"city {args.city!r} has no materialized items yet; run "
                       f"`lgsid materialize --city {args.city}`")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for section, values in report.items():
            print(f"{section}: {values}")
    return 0


def _print_item(row: dict) -> None:
    print(f"{row['code']:>16s}  {row['item_id']}  {row['name']}  [{row['admin_path']}]")


def _cmd_lookup(args: argparse.Namespace) -> int:
    from lgsid_pipeline.lookup import lookup_code, lookup_item

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
        print(json.dumps({"code": args.code, "matches": total, "items": rows}, indent=2,
                         default=str))
    else:
        print(f"{total} items under {args.code} ({args.tokenizer})"
              + (f"; first {len(rows)}" if total > len(rows) else ""))
        for row in rows:
            _print_item(row)
    return 0 if total else 1


def _cmd_recommend(args: argparse.Namespace) -> int:
    from lgsid_pipeline.lookup import UnknownUserError, cached_recommendations

    CityRegistry().get(args.city)
    try:
        rows = cached_recommendations(Warehouse(), args.city, args.user, args.k)
    except UnknownUserError as exc:
        print(f"lgsid: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"city": args.city, "user": args.user, "items": rows}, indent=2,
                         default=str))
    else:
        print(f"served by {rows[0]['model']} (refreshed {rows[0]['refreshed_at']})")
        for row in rows:
            print(f"{row['rank']:>3d}  {row['code']:>16s}  {row['score']:8.4f}  "
                  f"{row['item_id']}  {row['name']}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from lgsid_pipeline.sources.synthetic import SyntheticCitySpec, generate_city

    spec = SyntheticCitySpec(name=args.name, seed=args.seed, n_items=args.items)
    counts = generate_city(spec, Path(args.out))
    print(json.dumps(counts))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lgsid", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate the synthetic demo cities and materialize them")
    p.add_argument("--parallel", type=int, default=2, help="cities run at once")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("add-city", help="register a city partition and its data source")
    p.add_argument("slug")
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--path", required=True, help="source file or folder")
    p.add_argument("--boundaries", default=None,
                   help="admin boundaries: nyc, tokyo, or a folder (default: detect)")
    p.add_argument("--encoding", default="auto", choices=ENCODINGS)
    p.add_argument("--name", default=None, help="display name used in prompts")
    p.set_defaults(func=_cmd_add_city)

    p = sub.add_parser("remove-city", help="unregister a city")
    p.add_argument("slug")
    p.add_argument("--delete-data", action="store_true", help="also delete its tables")
    p.set_defaults(func=_cmd_remove_city)

    p = sub.add_parser("cities", help="list registered cities")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_cities)

    p = sub.add_parser("materialize", help="materialize per-city assets")
    p.add_argument("--city", action="append", help="city slug (repeatable; default: all)")
    p.add_argument("--select", default=None,
                   help="Dagster asset selection, e.g. '*interactions' or 'items+' or "
                        "'raw_items,items' (default: every per-city asset)")
    p.add_argument("--parallel", type=int, default=2, help="cities run at once")
    p.add_argument("--max-quarantine-rate", type=float, default=None,
                   help="quarantine share above which the blocking checks fail (default 0.25)")
    p.add_argument("--config", default=None,
                   help="YAML/JSON Dagster run config (ops: per-asset training settings; "
                        "resources: lgsid settings such as encoder_path)")
    p.add_argument("--split-t1", default=None,
                   help="recommender split: validation starts at this time (ISO, UTC)")
    p.add_argument("--split-t2", default=None,
                   help="recommender split: test starts at this time (ISO, UTC)")
    p.set_defaults(func=_cmd_materialize)

    p = sub.add_parser("report", help="latest figures of one city")
    p.add_argument("--city", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("lookup", help="an item's semantic ID, or the items under a code")
    p.add_argument("--city", required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--item", help="item id")
    what.add_argument("--code", help="full code (12-7-3-0) or prefix (12-7)")
    p.add_argument("--tokenizer", default="lgsid", choices=("lgsid", "rqkmeans", "rqvae"))
    p.add_argument("--limit", type=int, default=50, help="items listed under a prefix")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_lookup)

    p = sub.add_parser("recommend", help="a user's cached top-K items (user_topk_cache)")
    p.add_argument("--city", required=True)
    p.add_argument("--user", required=True, help="user id as in the check-ins")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_recommend)

    p = sub.add_parser("synth", help="write a synthetic city's source files to a folder")
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="Synthville")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--items", type=int, default=2000)
    p.set_defaults(func=_cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lgsid`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, InvalidCityError, FileNotFoundError, TableNotFoundError, ValueError) as exc:
        print(f"lgsid: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
