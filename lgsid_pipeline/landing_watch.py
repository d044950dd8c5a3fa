"""What the landing sensor decides, as plain Python: which cities' landed files changed since
the last tick (by fingerprint), which cities are new (registered with source ``landing``),
and which folders are skipped and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.config import InvalidCityError, validate_city_slug
from lgsid_pipeline.sources.landing import landing_files, landing_fingerprint


@dataclass
class LandingScan:
    """One scan of ``LGSID_HOME/landing``."""

    changed: dict[str, str] = field(default_factory=dict)  # city -> fingerprint of its files
    new_cities: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "<folder>: <why>"
    seen: dict[str, str] = field(default_factory=dict)  # every city's last fingerprint


def scan_landing(root: Path, seen: dict[str, str], registry: CityRegistry) -> LandingScan:
    """Compare each city folder under ``root`` with its fingerprint in ``seen``; register a
    city not in ``registry`` (files landed for a city of another source are additions to
    that source)."""
    scan = LandingScan(seen=dict(seen))
    known = {c.slug for c in registry.all()}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        city = folder.name
        try:
            validate_city_slug(city)
        except InvalidCityError as exc:
            scan.skipped.append(f"{city}: {exc}")
            continue
        item_files, checkin_files = landing_files(folder)
        if not item_files and not checkin_files:
            continue
        fingerprint = landing_fingerprint(folder)
        if seen.get(city) == fingerprint:
            continue
        if city not in known:
            registry.add(CityConfig(slug=city, source="landing", path=str(folder)))
            scan.new_cities.append(city)
        scan.seen[city] = scan.changed[city] = fingerprint
    return scan
