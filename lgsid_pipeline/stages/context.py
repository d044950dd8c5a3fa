"""What every stage function works against: one LGSID home (its warehouse, report store and
model registry), the run that asks, and where progress lines go."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lgsid_pipeline.cities import CityRegistry
from lgsid_pipeline.config import landing_root, lgsid_home
from lgsid_pipeline.reports import ReportStore
from lgsid_pipeline.stages.outcome import Log, quiet
from lgsid_pipeline.warehouse import KEEP_VERSIONS, Warehouse


def no_rebalance() -> None:
    """Leave torch's threads as they are (outside a compute step)."""


@dataclass(frozen=True)
class StageContext:
    """The warehouse, the report store and the MLflow registry under ``home``; ``run_id`` is
    the Dagster run that asks (None outside Dagster), recorded with what gets registered;
    ``rebalance_threads`` is called between batches of long torch work (a compute step's
    threads follow how many compute steps run at once)."""

    warehouse: Warehouse
    reports: ReportStore
    home: Path
    run_id: str | None = None
    log: Log = quiet
    rebalance_threads: Callable[[], object] = no_rebalance

    @classmethod
    def at(
        cls,
        home: Path | None = None,
        run_id: str | None = None,
        log: Log = quiet,
        keep_versions: int = KEEP_VERSIONS,
        rebalance_threads: Callable[[], object] = no_rebalance,
    ) -> StageContext:
        """The context of ``home`` (default ``LGSID_HOME``)."""
        root = Path(home).resolve() if home else lgsid_home()
        return cls(
            Warehouse(root, keep_versions=keep_versions),
            ReportStore(root),
            root,
            run_id,
            log,
            rebalance_threads,
        )

    @property
    def landing(self) -> Path:
        """The landing folder of this home (one sub-folder per city)."""
        return landing_root(self.home)

    def model_dir(self, name: str) -> Path:
        """Local working folder of a trained model before it is registered."""
        return self.home / "models" / name

    def cities(self) -> list[str]:
        """Every registered city's slug."""
        return [c.slug for c in CityRegistry(self.home).all()]

    def cities_with(self, table: str) -> list[str]:
        """The registered cities that have ``table``."""
        return [city for city in self.cities() if self.warehouse.has_table(table, city)]
