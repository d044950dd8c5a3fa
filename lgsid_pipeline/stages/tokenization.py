"""The tokenization stage as plain functions: fit one tokenizer kind on every city's
embeddings (after checking they come from the champion encoder), register it, and assign a
city's semantic IDs incrementally into a staged version with the audits of its files.

The assets in ``defs/tokenizer.py`` turn the results into Dagster metadata and check
results; the three kinds (LGSID, RQ-KMeans, RQ-VAE) go through the same functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lgsid_pipeline.catalog import (
    TOKENIZER_EMBEDDING_PARTS,
    tokenizer_asset,
    tokenizer_model,
)
from lgsid_pipeline.model_files import ModelFileError
from lgsid_pipeline.plots import curves_png, tokens_map_png
from lgsid_pipeline.quality import Audit, check_encoder_version
from lgsid_pipeline.registry import (
    ModelArtifactError,
    champion_folder,
    register_folder,
)
from lgsid_pipeline.reports import GLOBAL
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.outcome import (
    Link,
    Markdown,
    Metadata,
    Plot,
    require_passed,
)
from lgsid_pipeline.stages.semantic_ids import CODE_FIGURES
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.config import TokenizerConfig
from lgsid_pipeline.tokenizer.semantic_ids import (
    aligned_embeddings,
)
from lgsid_pipeline.warehouse import Warehouse

# the per-city figures shown in the tokenizer's metadata table
REPORT_KEYS = ("items", *CODE_FIGURES, "assign_items_per_s")


def inputs_check_name(kind: str) -> str:
    """The blocking check that a tokenizer's embeddings come from the champion encoder."""
    return f"{tokenizer_asset(kind)}_inputs_current"


def tokenizer_checks(kind: str) -> dict[str, str]:
    """The blocking checks of a tokenizer fit, with descriptions."""
    return {
        inputs_check_name(kind): "every embedding it fits on comes from the champion encoder "
        "(checked before fitting)"
    }


@dataclass
class CityEmbeddings:
    """A city's items, their embeddings (one part) in item order, and each one's encoder."""

    items: pd.DataFrame
    vectors: np.ndarray
    encoder_versions: list[str]


def city_embeddings(warehouse: Warehouse, city: str, kind: str) -> CityEmbeddings:
    """The items and the embeddings tokenizer ``kind`` reads, of ``city``."""
    items = warehouse.read_table("items", city)
    vectors, versions = aligned_embeddings(
        items, warehouse.read_arrow("item_embeddings", city, TOKENIZER_EMBEDDING_PARTS[kind])
    )
    return CityEmbeddings(items, vectors, versions)


def inputs_audit(kind: str, inputs: dict[str, CityEmbeddings], expected: str) -> Audit:
    """Every embedding the tokenizer would fit on comes from encoder version ``expected``."""
    return Audit(
        inputs_check_name(kind),
        tokenizer_asset(kind),
        check_encoder_version(
            {city: e.encoder_versions for city, e in inputs.items()},
            expected,
            "materialize item_embeddings for these cities with the champion encoder first",
        ),
    )


def previous_tokenizer(kind: str, home: Path) -> Tokenizer | None:
    """The champion tokenizer of ``kind`` (warm start, churn), None when there is none."""
    try:
        return Tokenizer.load(champion_folder(tokenizer_model(kind), home=home))
    except (ModelArtifactError, ModelFileError):
        return None


@dataclass
class FittedTokenizer:
    """A fitted, saved and registered tokenizer, with its per-city figures and plots."""

    tokenizer: Tokenizer
    per_city: dict[str, dict[str, Any]]
    retrain_churn: float | None
    mlflow_version: str
    run_url: str
    images: dict[str, bytes] = field(default_factory=dict)
    audits: list[Audit] = field(default_factory=list)

    def metadata(self, kind: str) -> Metadata:
        tokenizer = self.tokenizer
        return {
            "tokenizer_version": tokenizer.version,
            "encoder_version": tokenizer.encoder_version or "",
            "fit_seconds": tokenizer.fit_seconds,
            "warm_started": tokenizer.warm_started,
            "retrain_churn": -1.0 if self.retrain_churn is None else self.retrain_churn,
            "codebook_sizes": list(tokenizer.codebook_sizes),
            "per_city": Markdown(report_markdown(self.per_city)),
            "mlflow_version": self.mlflow_version,
            "mlflow_run": Link(self.run_url),
            **{
                name.removesuffix(".png"): Plot(GLOBAL, f"{kind}_{name}", png)
                for name, png in self.images.items()
            },
        }


def fit_and_register(
    ctx: StageContext,
    kind: str,
    encoder_folder: Path,
    settings: TokenizerConfig,
    warm_start: bool,
    cities: list[str] | None = None,
) -> FittedTokenizer:
    """Fit tokenizer ``kind`` on the embeddings of every city of ``cities`` (default: every
    registered city) that has them, after checking they all come from the aligned encoder in
    ``encoder_folder`` (the champion); raises ``BlockingCheckFailed`` before fitting when
    some do not."""
    from lgsid_pipeline.encoder.model import adapter_encoder_versions

    warehouse, part = ctx.warehouse, TOKENIZER_EMBEDDING_PARTS[kind]
    cities = [
        c
        for c in (ctx.cities() if cities is None else cities)
        if warehouse.has_table("item_embeddings", c, part)
    ]
    if not cities:
        raise RuntimeError("no city has item_embeddings; materialize them first")
    inputs = {city: city_embeddings(warehouse, city, kind) for city in cities}
    expected = adapter_encoder_versions(encoder_folder)[part]
    audits = [inputs_audit(kind, inputs, expected)]
    require_passed(f"{kind} tokenizer", audits)
    fitted = fit_tokenizer(ctx, kind, inputs, settings, expected, warm_start)
    fitted.audits = audits
    return fitted


def fit_tokenizer(
    ctx: StageContext,
    kind: str,
    inputs: dict[str, CityEmbeddings],
    settings: TokenizerConfig,
    encoder_version: str,
    warm_start: bool,
) -> FittedTokenizer:
    """Fit tokenizer ``kind`` on every city of ``inputs`` (warm-started from the champion
    when asked), save it, register it and write its report."""
    from lgsid_pipeline.tokenizer.evaluate import tokenizer_report
    from lgsid_pipeline.tokenizer.kinds import TOKENIZERS

    log, folder = ctx.log, ctx.model_dir(tokenizer_model(kind))
    cities = list(inputs)
    items = pd.concat([inputs[c].items for c in cities], ignore_index=True)
    vectors = np.concatenate([inputs[c].vectors for c in cities])
    previous = previous_tokenizer(kind, ctx.home)
    log(
        f"fitting {kind} on {len(items)} items of {cities}, codebooks "
        f"{settings.codebook_sizes}, previous version {previous.version if previous else None}"
    )

    def log_epoch(row: dict[str, float]) -> None:
        log(
            f"epoch {row['epoch']:.0f}/{settings.epochs} loss {row.get('loss', float('nan')):.4f}"
            f" min utilisation {row['min_utilisation']:.2f} ({row['seconds']:.1f}s/epoch)"
        )

    tokenizer = TOKENIZERS[kind](settings).fit(
        items,
        vectors,
        previous=previous,
        on_epoch=log_epoch,
        warm_start=warm_start,
        encoder_version=encoder_version,
    )
    retrain_churn = None
    if (
        previous is not None
        and previous.dim == tokenizer.dim
        and previous.n_levels == tokenizer.n_levels
    ):
        retrain_churn = float(
            np.mean(
                np.any(previous.assign(items, vectors) != tokenizer.assign(items, vectors), axis=1)
            )
        )
    per_city = {c: tokenizer_report(tokenizer, inputs[c].items, inputs[c].vectors) for c in cities}
    tokenizer.save(folder)
    images = {
        f"codes_map_{c}.png": tokens_map_png(
            inputs[c].items,
            tokenizer.assign(inputs[c].items, inputs[c].vectors)[:, 0],
            f"{c} ({kind})",
        )
        for c in cities
    }
    if tokenizer.history:
        images["training.png"] = curves_png(
            tokenizer.history, ["loss", "min_utilisation"], "epoch", f"{kind} tokenizer"
        )
    metrics = {f"{c}.{k}": float(v) for c, figures in per_city.items() for k, v in figures.items()}
    metrics["fit_seconds"] = tokenizer.fit_seconds
    if retrain_churn is not None:
        metrics["retrain_churn"] = retrain_churn
    registered = register_folder(
        tokenizer_model(kind),
        folder,
        params={
            **asdict(settings),
            "cities": ",".join(cities),
            "warm_started": tokenizer.warm_started,
        },
        metrics=metrics,
        dagster_run_id=ctx.run_id,
        tags={"tokenizer_version": tokenizer.version, "encoder_version": encoder_version},
        images=images,
        home=ctx.home,
    )
    ctx.reports.write(
        ctx.reports.tokenizer(kind),
        {
            "version": tokenizer.version,
            "mlflow_version": registered.version,
            "encoder_version": encoder_version,
            "fit_seconds": tokenizer.fit_seconds,
            "retrain_churn": retrain_churn,
            "warm_started": tokenizer.warm_started,
            "cities": per_city,
        },
    )
    return FittedTokenizer(
        tokenizer, per_city, retrain_churn, registered.version, registered.run_url, images
    )


def report_markdown(per_city: dict[str, dict]) -> str:
    """The per-city figures of a fitted tokenizer as a markdown table."""
    rows = ["| city | " + " | ".join(REPORT_KEYS) + " |", "|---|" + "---:|" * len(REPORT_KEYS)]
    for city, figures in per_city.items():
        cells = [
            f"{figures[k]:.3f}" if isinstance(figures[k], float) else str(figures[k])
            for k in REPORT_KEYS
        ]
        rows.append(f"| {city} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
