"""Resources and partitions shared by every Dagster stage."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg

from lgsid_pipeline.cities import CityRegistry
from lgsid_pipeline.config import lgsid_home
from lgsid_pipeline.quality import CheckOutcome
from lgsid_pipeline.warehouse import Warehouse

city_partitions = dg.DynamicPartitionsDefinition(name="city")


class LgsidResource(dg.ConfigurableResource):
    """Where the warehouse lives and the limits the checks enforce."""

    home: str = ""  # empty: LGSID_HOME or <repo>/.lgsid
    max_quarantine_rate: float = 0.25

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else lgsid_home()

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.home_path)

    @property
    def cities(self) -> CityRegistry:
        return CityRegistry(self.home_path)


def check_result(name: str, asset: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    """An asset check result from a library check outcome (failures block downstream)."""
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=asset,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata=outcome.metadata,
    )


def png_metadata(png: bytes, path: Path) -> dict[str, dg.MetadataValue]:
    """Embed a PNG in asset metadata (shown in the UI) and keep a file copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    encoded = base64.b64encode(png).decode("ascii")
    return {
        "map": dg.MetadataValue.md(f"![{path.stem}](data:image/png;base64,{encoded})"),
        "map_path": dg.MetadataValue.path(str(path)),
    }
