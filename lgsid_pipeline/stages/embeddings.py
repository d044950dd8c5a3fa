"""The embeddings stage as plain functions: encode a city's new or changed items with the
reference and the aligned encoder, audit both parts as staged, publish them as one version,
and report the geography of the embeddings before and after alignment."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from lgsid_pipeline.catalog import (
    ALIGNED_ENCODER,
)
from lgsid_pipeline.embeddings import (
    IncrementalResult,
    embedding_matrix,
    incremental_embeddings,
)
from lgsid_pipeline.quality import Audit, check_covers
from lgsid_pipeline.registry import log_run_metrics
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.outcome import (
    UNCHANGED,
    Log,
    Markdown,
    Metadata,
    publish_if_passed,
    quiet,
    require_passed,
)
from lgsid_pipeline.warehouse import StagedVersion, Warehouse

if TYPE_CHECKING:
    from lgsid_pipeline.encoder.frozen import FrozenEncoder
    from lgsid_pipeline.encoder.model import TextEncoder


EMBEDDING_PARTS = ("reference", "aligned")  # the plain encoder's and the aligned one's


class PartEncoders(Protocol):
    """The encoder of each embedding part, and its version (known before any weights load)."""

    def version(self, part: str) -> str: ...

    def encoder(self, part: str) -> TextEncoder | FrozenEncoder: ...


@dataclass
class LoadedEncoders:
    """Encoders already in memory, one per part."""

    encoders: Mapping[str, TextEncoder]

    def version(self, part: str) -> str:
        return self.encoders[part].version

    def encoder(self, part: str) -> TextEncoder:
        return self.encoders[part]


@dataclass
class ChampionEncoders:
    """The frozen base encoder (``reference``) and the base with the champion adapter
    (``aligned``), loaded only when a part has something to encode. Versions come from the
    adapter's recorded metadata, so a run with nothing new loads no weights. A plain BERT with
    a plain LoRA adapter (the default MiniLM) loads as a ``FrozenEncoder``, without importing
    transformers or peft (3 s of a backfill); any other loads through them, the base weights
    once, the adapter attached after the reference part is done (``EMBEDDING_PARTS`` order)."""

    adapter: Path
    base_path: str | None = None
    _loaded: tuple[str, TextEncoder | FrozenEncoder] | None = field(default=None, repr=False)
    _versions: dict[str, str] | None = field(default=None, repr=False)

    def version(self, part: str) -> str:
        from lgsid_pipeline.encoder.model import adapter_encoder_versions

        if self._versions is None:  # read the adapter's metadata once
            self._versions = adapter_encoder_versions(self.adapter)
        return self._versions[part]

    def encoder(self, part: str) -> TextEncoder | FrozenEncoder:
        if part not in EMBEDDING_PARTS:
            raise KeyError(f"no encoder for embedding part {part!r}; parts: {EMBEDDING_PARTS}")
        if self._loaded is None or self._loaded[0] != part:
            self._loaded = (part, self._load(part))
        encoder = self._loaded[1]
        if encoder.version != self.version(part):
            raise ValueError(
                f"the {part} encoder loaded from {encoder.name_or_path} has version "
                f"{encoder.version}, but the champion adapter {self.adapter} records "
                f"{self.version(part)}: the base weights differ from the ones it was trained on"
            )
        return encoder

    def _load(self, part: str) -> TextEncoder | FrozenEncoder:
        from lgsid_pipeline.encoder import frozen
        from lgsid_pipeline.encoder.model import TextEncoder, default_encoder_path

        base = Path(self.base_path) if self.base_path else default_encoder_path()
        adapter = self.adapter if part == "aligned" else None
        if frozen.supports(base, adapter):
            return frozen.FrozenEncoder.load(base, adapter)
        previous = self._loaded[1] if self._loaded else None
        if isinstance(previous, TextEncoder) and not previous.has_adapter and adapter:
            encoder = previous  # the reference part's weights, with the adapter attached
        else:
            encoder = TextEncoder.load(base)
        if adapter is not None:
            encoder.load_adapter(adapter)
        return encoder


def part_encoders(encoders: Mapping[str, TextEncoder] | PartEncoders) -> PartEncoders:
    """``encoders`` as ``PartEncoders`` (a mapping of loaded encoders is wrapped)."""
    return LoadedEncoders(encoders) if isinstance(encoders, Mapping) else encoders


def embeddings_check_name(part: str) -> str:
    """The blocking check that every item has one ``part`` embedding of its content."""
    return f"item_embeddings_{part}_complete"


EMBEDDING_CHECKS = {
    embeddings_check_name(part): f"one {part} embedding per item, of its current content"
    for part in EMBEDDING_PARTS
}


@dataclass
class StagedEmbeddings:
    """Both embedding parts of a city, encoded incrementally into a staged version, and the
    audits of the staged files."""

    results: dict[str, Any]  # part -> embeddings.IncrementalResult
    encode_seconds: float
    audits: list[Audit]

    @property
    def encoded(self) -> int:
        return sum(r.encoded for r in self.results.values())

    def metadata(self) -> dict[str, Any]:
        """Counts and speed for the asset's metadata."""
        out = {
            "encoded": self.results["aligned"].encoded,
            "reused": self.results["aligned"].reused,
            "reference_encoded": self.results["reference"].encoded,
            "encode_seconds": round(self.encode_seconds, 3),
        }
        if self.encoded:
            out["encoded_items_per_s"] = round(self.encoded / self.encode_seconds, 1)
        return out


def stage_item_embeddings(
    warehouse: Warehouse,
    staged: StagedVersion,
    city: str,
    items: pd.DataFrame,
    encoders: Mapping[str, TextEncoder] | PartEncoders,
    dtype: str = "auto",
    log: Log = quiet,
    before_batch: Callable[[], object] | None = None,
) -> StagedEmbeddings:
    """Encode the new or changed items of ``city`` with each part's encoder (reusing the
    published embeddings of the rest; an encoder is asked for only when a part has items to
    encode; ``before_batch`` runs before each batch), write both parts to ``staged`` and
    audit them as re-read from disk."""
    from lgsid_pipeline.encoder.prompt import item_prompts

    source = part_encoders(encoders)
    results, seconds = {}, 0.0
    for part in EMBEDDING_PARTS:
        previous = (
            warehouse.read_arrow("item_embeddings", city, part)
            if warehouse.has_table("item_embeddings", city, part)
            else None
        )

        def encode(frame: pd.DataFrame, part: str = part) -> np.ndarray:
            prompts = item_prompts(frame)
            return source.encoder(part).encode(
                prompts, dtype=dtype, progress=True, before_batch=before_batch
            )

        started = time.perf_counter()
        result = incremental_embeddings(city, items, previous, source.version(part), encode)
        seconds += time.perf_counter() - started
        staged.write_table("item_embeddings", result.table, part=part)
        results[part] = result
        log(f"{city} {part}: encoded {result.encoded}, reused {result.reused}")
    audits = [
        Audit(
            embeddings_check_name(part),
            "item_embeddings",
            check_covers(
                items,
                staged.read_arrow(
                    "item_embeddings", part, columns=["item_id", "content_hash"]
                ).to_pandas(),
            ),
        )
        for part in EMBEDDING_PARTS
    ]
    return StagedEmbeddings(results, seconds, audits)


@dataclass
class PublishedEmbeddings:
    """A city's published embeddings version and the before/after geography (None when no
    embedding changed)."""

    staged: StagedEmbeddings
    version: str
    encoder_version: str
    items: int
    geography: dict | None
    unchanged: bool = False

    def metadata(self) -> Metadata:
        out: Metadata = {
            "dagster/row_count": self.items,
            "version": self.version,
            "unchanged": self.unchanged,
            "encoder_version": self.encoder_version,
            **self.staged.metadata(),
        }
        if self.geography:
            out["geography"] = Markdown(before_after_markdown(self.geography))
        return out


KEY_COLUMNS = ["item_id", "content_hash", "encoder_version"]


def published_keys(warehouse: Warehouse, city: str) -> dict[str, pd.DataFrame] | None:
    """The key columns of each published embedding part of ``city`` (no vectors read); None
    when a part is missing."""
    import pyarrow.parquet as pq

    if warehouse.published(city, "embeddings") is None:
        return None
    keys = {}
    for part in EMBEDDING_PARTS:
        path = warehouse.resolve_table("item_embeddings", city, part)
        if path is None or not path.is_file():
            return None
        keys[part] = pq.read_table(path, columns=KEY_COLUMNS).to_pandas()
    return keys


def nothing_to_encode(
    ctx: StageContext, city: str, items: pd.DataFrame, source: PartEncoders
) -> dict[str, pd.DataFrame] | None:
    """The published key columns when a run would publish exactly what is published: every
    part holds these items in this order with this content from the part's current encoder
    (its rows' ``encoder_version``), and the geography report is of the aligned encoder. None
    when there is something to do."""
    keys = published_keys(ctx.warehouse, city)
    report = ctx.reports.read(ctx.reports.alignment(city)) or {}
    if keys is None or report.get("encoder_version") != source.version("aligned"):
        return None
    ids = items["item_id"].astype(str).to_numpy()
    hashes = items["content_hash"].astype(str).to_numpy()
    for part, frame in keys.items():
        if not (
            len(frame) == len(ids)
            and (frame["item_id"].astype(str).to_numpy() == ids).all()
            and (frame["content_hash"].astype(str).to_numpy() == hashes).all()
            and (frame["encoder_version"] == source.version(part)).all()
        ):
            return None
    return keys


def embed_city(
    ctx: StageContext,
    city: str,
    encoders: Mapping[str, TextEncoder] | PartEncoders,
    dtype: str = "auto",
) -> PublishedEmbeddings:
    """Encode ``city``'s new or changed items with the reference and the aligned encoder,
    audit both parts as staged and publish them as one version (``BlockingCheckFailed``
    when an audit fails), then report the geography before and after alignment."""
    warehouse = ctx.warehouse
    items = warehouse.read_table("items", city)
    encoders = part_encoders(encoders)
    version = encoders.version("aligned")
    published = nothing_to_encode(ctx, city, items, encoders)
    if published is not None:  # a night with nothing new: no staging, no write, no re-read
        audits = [
            Audit(embeddings_check_name(part), "item_embeddings", check_covers(items, keys))
            for part, keys in published.items()
        ]
        require_passed(f"{city} item_embeddings (published)", audits)
        reused = {
            part: IncrementalResult(pa.table({}), encoded=0, reused=len(items))
            for part in EMBEDDING_PARTS
        }
        pointer = warehouse.published(city, "embeddings")
        assert pointer is not None  # nothing_to_encode needs a published version
        ctx.log(f"{city}: nothing to encode; embeddings version {pointer['version']} kept")
        return PublishedEmbeddings(
            StagedEmbeddings(reused, 0.0, audits),
            pointer["version"],
            version,
            len(items),
            None,
            True,
        )
    with warehouse.staging(city, "embeddings") as staged:
        encoded = stage_item_embeddings(
            warehouse, staged, city, items, encoders, dtype, ctx.log, ctx.rebalance_threads
        )
        pointer = publish_if_passed(
            warehouse,
            staged,
            f"{city} item_embeddings",
            encoded.audits,
            {"run_id": ctx.run_id, "encoder_version": version},
        )
    figures = geography_before_after(
        ctx,
        city,
        items,
        embedding_matrix(encoded.results["reference"].table),
        embedding_matrix(encoded.results["aligned"].table),
        version,
    )
    warehouse.refresh_catalog()
    return PublishedEmbeddings(
        encoded, pointer["version"], version, len(items), figures, pointer[UNCHANGED]
    )


def geography_before_after(
    ctx: StageContext,
    city: str,
    items: pd.DataFrame,
    reference: np.ndarray,
    aligned: np.ndarray,
    encoder_version: str,
) -> dict | None:
    """P/C/T@K, NMI and Similarity@K of the plain and the aligned embeddings of ``city``,
    written to the report store and logged to the aligned encoder's MLflow run; None when
    the stored report is already of ``encoder_version``. A backfill of new items does not
    recompute them: they describe the encoder, and on a whole city they cost minutes."""
    from lgsid_pipeline.alignment.evaluate import geography_metrics

    reports = ctx.reports
    path = reports.alignment(city)
    if (reports.read(path) or {}).get("encoder_version") == encoder_version:
        return None
    by_stage = {
        "before": geography_metrics(reference, items, reference),
        "after": geography_metrics(aligned, items, reference),
    }
    figures = {**by_stage, "encoder_version": encoder_version, "items": len(items)}
    reports.write(path, figures)
    log_run_metrics(
        ALIGNED_ENCODER,
        {f"{city}.{stage}.{k}": v for stage, m in by_stage.items() for k, v in m.items()},
        home=ctx.home,
    )
    return figures


def before_after_markdown(figures: dict) -> str:
    """The before/after geography as a markdown table."""
    rows = ["| metric | before | after |", "|---|---:|---:|"]
    rows += [
        f"| {k} | {figures['before'][k]:.3f} | {figures['after'][k]:.3f} |"
        for k in figures["before"]
    ]
    return "\n".join(rows)
