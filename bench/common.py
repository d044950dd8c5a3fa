"""Shared set-up of the benchmarks: an isolated LGSID/Dagster home and the real cities."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REAL_CITIES = {
    "new-york": ("gowalla", "gowalla_nyc"),
    "tokyo": ("foursquare-tsmc", "foursquare_tky/dataset_TSMC2014_TKY_valtest.txt"),
}
RESULTS = Path(__file__).parent / "results"


def isolated_home(prefix: str) -> Path:
    """Point LGSID_HOME and DAGSTER_HOME at a new temporary folder (call before imports)."""
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["LGSID_HOME"] = str(scratch / "home")
    os.environ["DAGSTER_HOME"] = str(scratch / "dagster")
    (scratch / "dagster").mkdir(parents=True)
    return scratch


def register_real_cities() -> list:
    """Register the real cities from the shared data folder; return their configs."""
    from lgsid_pipeline.cities import CityConfig, CityRegistry
    from lgsid_pipeline.config import shared_data_dir

    registry = CityRegistry()
    configs = [CityConfig(slug=slug, source=source, path=str(shared_data_dir() / rel))
               for slug, (source, rel) in REAL_CITIES.items()]
    for config in configs:
        registry.add(config)
    return configs
