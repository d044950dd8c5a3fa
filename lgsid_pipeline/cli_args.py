"""The ``lgsid`` command's argument checks: every option's type and range, and run configs
checked against the jobs they will reach, so that bad input is one line and exit code 2,
never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from lgsid_pipeline.config import InvalidCityError, validate_city_slug
from lgsid_pipeline.geo.admin import named_boundary_sets


class CliError(Exception):
    """An error worth one clear line and exit code 2."""


# Valid ranges of the options (named in their --help texts).
PARALLEL_RANGE = (1, 32)
LIMIT_RANGE = (1, 1000)
K_RANGE = (1, 100)
SEED_RANGE = (0, 2**31 - 1)
SYNTH_ITEMS_RANGE = (50, 100_000)
SPLIT_YEARS = (1970, 2100)
MAX_TEXT = 256  # item and user ids, display names, asset selections
MAX_CODE = 64
MAX_CONFIG_BYTES = 1 << 20
RUN_CONFIG_KEYS = ("ops", "resources", "execution", "loggers")
BOUNDARY_REGIONS = tuple(named_boundary_sets(Path(".")))
_INTEGER = re.compile(r"[+-]?[0-9]+")


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` as one line and exit with code 2."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a decimal integer in ``lo..hi``."""

    def parse(text: str) -> int:
        value = text.strip()
        if not _INTEGER.fullmatch(value):
            raise argparse.ArgumentTypeError(f"expected an integer in {lo}..{hi}, got {text!r}")
        if len(value.lstrip("+-")) > 20 or not lo <= int(value) <= hi:
            shown = value if len(value) <= 24 else value[:20] + "..."
            raise argparse.ArgumentTypeError(f"{shown} is outside {lo}..{hi}")
        return int(value)

    parse.__name__ = f"integer {lo}..{hi}"
    return parse


def float_in(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a finite number in ``lo..hi``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number in {lo:g}..{hi:g}, got {text!r}"
            ) from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{text.strip()} is outside {lo:g}..{hi:g}")
        return value

    parse.__name__ = f"number {lo:g}..{hi:g}"
    return parse


def text_of(max_len: int) -> Callable[[str], str]:
    """An argparse type: 1..``max_len`` characters, not blank, no control characters."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError("must not be empty")
        if len(text) > max_len:
            raise argparse.ArgumentTypeError(f"{len(text)} characters; at most {max_len}")
        if any(unicodedata.category(c) == "Cc" for c in text):
            raise argparse.ArgumentTypeError(f"control characters are not allowed: {text!r}")
        return text

    parse.__name__ = f"text of 1..{max_len} characters"
    return parse


def city_slug(text: str) -> str:
    """An argparse type: a city key accepted by ``validate_city_slug``."""
    try:
        return validate_city_slug(text)
    except InvalidCityError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split_time(text: str) -> str:
    """An argparse type: an ISO 8601 date or time (years 1970..2100); returned as given."""
    value = text.strip()
    lo, hi = SPLIT_YEARS
    try:
        parsed = utc(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date or time such as 2025-02-01 or 2025-02-01T12:00:00Z, "
            f"got {text!r}"
        ) from None
    if not lo <= parsed.year <= hi:
        raise argparse.ArgumentTypeError(f"year {parsed.year} is outside {lo}..{hi}")
    return value


def utc(value: str) -> datetime:
    """An ISO 8601 time both datetime and pandas read the same way, in UTC (naive: UTC)."""
    import pandas as pd

    parsed = datetime.fromisoformat(value)
    if pd.Timestamp(value).to_pydatetime() != parsed:
        raise ValueError(f"ambiguous time {value!r}")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def boundaries(text: str) -> str:
    """An argparse type: a named boundary region, or an existing folder (made absolute)."""
    if text in BOUNDARY_REGIONS:
        return text
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither {' nor '.join(BOUNDARY_REGIONS)} nor an existing folder"
        )
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{path} is a file; expected a folder of admin_level*.geojson files"
        )
    return str(path.resolve())


def out_folder(text: str) -> Path:
    """An argparse type: a folder, existing or to be created (not a file, not under one)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    path = Path(text).expanduser().absolute()
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise argparse.ArgumentTypeError(f"{folder} is a file; expected a folder")
            break
    return path


def run_config_file(text: str) -> dict[str, Any]:
    """An argparse type: a readable YAML/JSON file holding a Dagster run config mapping."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"run config file not found: {path}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise argparse.ArgumentTypeError(
            f"run config {path} is {kind}; expected a YAML or JSON file"
        )
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise argparse.ArgumentTypeError(f"run config {path} is larger than 1 MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"cannot read run config {path}: {exc.strerror or exc}"
        ) from None
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"run config {path} is not UTF-8 text") from None
    try:
        config = parse_config_text(source, json_only=path.suffix.lower() == ".json")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"run config {path}: {exc}") from None
    return config


def parse_config_text(source: str, json_only: bool) -> dict[str, Any]:
    """Parse run config text (JSON, or YAML) and check its shape; ``ValueError`` if wrong."""
    import yaml

    if json_only:
        try:
            config = json.loads(source)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
    else:
        try:
            config = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ValueError(f"invalid YAML: {problem}{where}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(
            f"must be a mapping with 'ops' and/or 'resources', got {type(config).__name__}"
        )
    unknown = [repr(k) for k in config if k not in RUN_CONFIG_KEYS]
    if unknown:
        raise ValueError(
            f"unknown top-level key(s) {', '.join(unknown)}; expected {', '.join(RUN_CONFIG_KEYS)}"
        )
    for section in ("ops", "resources"):
        entries = config.get(section, {})
        if not isinstance(entries, dict):
            raise ValueError(f"'{section}' must be a mapping of names to settings")
        for name, entry in entries.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("config", {}), dict):
                raise ValueError(f"{section}.{name} must be a mapping whose 'config' is a mapping")
    return config


def check_run(select: str | None, run_config: dict | None) -> None:
    """Check the asset selection, and the run config against every run it will reach,
    before any run starts (``ValueError`` or ``CliError``: one line, exit code 2)."""
    if not select and not run_config:
        return
    import dagster as dg

    from lgsid_pipeline import definitions
    from lgsid_pipeline.runner import _config_for, plan_stages, resolve_selection

    stages = plan_stages(resolve_selection(select))
    if not run_config:
        return
    assets = {k.to_user_string() for k in resolve_selection(None)}
    unknown = sorted(str(name) for name in run_config.get("ops", {}) if name not in assets)
    if unknown:
        raise CliError(
            f"run config names unknown assets under 'ops': {', '.join(unknown)} "
            f"(assets: {', '.join(sorted(assets))})"
        )
    for is_global, keys in stages:
        job = definitions.global_job_def() if is_global else definitions.city_job_def()
        try:
            dg.validate_run_config(
                job.get_subset(asset_selection=set(keys)), _config_for(run_config, keys)
            )
        except dg.DagsterInvalidConfigError as exc:
            problems = "; ".join(" ".join(e.message.split()) for e in exc.errors)
            raise CliError(f"invalid run config: {problems}") from None
