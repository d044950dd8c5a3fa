"""The tokenization stage as plain functions: fit one tokenizer kind on every city's
embeddings (after checking they come from the champion encoder), register it, and assign a
city's semantic IDs incrementally into a staged version with the audits of its files.

The assets in ``defs/tokenizer.py`` turn the results into Dagster metadata and check
results; the three kinds (LGSID, RQ-KMeans, RQ-VAE) go through the same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lgsid_pipeline.catalog import (
    TOKENIZER_EMBEDDING_PARTS,
    semantic_ids_asset,
    tokenizer_asset,
    tokenizer_model,
)
from lgsid_pipeline.plots import curves_png, tokens_map_png
from lgsid_pipeline.quality import Audit, check_encoder_version, check_unique
from lgsid_pipeline.registry import (
    ModelArtifactError,
    champion_folder,
    log_run_metrics,
    register_folder,
)
from lgsid_pipeline.reports import ReportStore
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.codes import (
    SemanticIdResult,
    aligned_embeddings,
    incremental_semantic_ids,
    level_columns,
)
from lgsid_pipeline.tokenizer.config import TokenizerConfig
from lgsid_pipeline.warehouse import StagedVersion, Warehouse

Log = Callable[[str], None]
# the per-city figures shown in the tokenizer's metadata table
REPORT_KEYS = (
    "items",
    "utilisation_min",
    "collision_rate",
    "largest_bucket",
    "nmi_level1",
    "nmi_level2",
    "reconstruction_error",
    "assign_items_per_s",
)
CODE_FIGURES = (
    "utilisation_min",
    "collision_rate",
    "largest_bucket",
    "nmi_level1",
    "nmi_level2",
    "reconstruction_error",
)


def _quiet(message: str) -> None:
    pass


def inputs_check_name(kind: str) -> str:
    """The blocking check that a tokenizer's embeddings come from the champion encoder."""
    return f"{tokenizer_asset(kind)}_inputs_current"


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
    except (ModelArtifactError, FileNotFoundError):
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


def fit_tokenizer(
    kind: str,
    inputs: dict[str, CityEmbeddings],
    settings: TokenizerConfig,
    encoder_version: str,
    warm_start: bool,
    folder: Path,
    home: Path,
    reports: ReportStore,
    dagster_run_id: str | None,
    log: Log = _quiet,
) -> FittedTokenizer:
    """Fit tokenizer ``kind`` on every city of ``inputs`` (warm-started from the champion
    when asked), save it to ``folder``, register it and write its report."""
    from lgsid_pipeline.tokenizer.evaluate import tokenizer_report
    from lgsid_pipeline.tokenizer.models import TOKENIZERS

    cities = list(inputs)
    items = pd.concat([inputs[c].items for c in cities], ignore_index=True)
    vectors = np.concatenate([inputs[c].vectors for c in cities])
    previous = previous_tokenizer(kind, home)
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
        dagster_run_id=dagster_run_id,
        tags={"tokenizer_version": tokenizer.version, "encoder_version": encoder_version},
        images=images,
        home=home,
    )
    reports.write(
        reports.tokenizer(kind),
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


def semantic_ids_audits(kind: str, tokenizer: Tokenizer, table: pd.DataFrame) -> list[Audit]:
    """The blocking checks of a semantic-ID table as persisted: distinct full codes, and
    every code assigned from embeddings of the encoder the tokenizer was fitted on."""
    asset = semantic_ids_asset(kind)
    audits = [Audit(f"{asset}_unique", asset, check_unique(table, ["code"]))]
    if tokenizer.encoder_version is not None:
        versions = table["encoder_version"].astype(str).tolist()
        audits.append(
            Audit(
                f"{asset}_encoder_matches",
                asset,
                check_encoder_version(
                    {table["city"].iloc[0] if len(table) else "": versions},
                    tokenizer.encoder_version,
                    f"refit {tokenizer_asset(kind)} on these embeddings first",
                ),
            )
        )
    return audits


@dataclass
class StagedCodes:
    """A city's semantic IDs of one kind, assigned into a staged version and re-read."""

    result: SemanticIdResult
    persisted: pd.DataFrame
    audits: list[Audit]
    embeddings: pa.Table

    def tokens(self, n_levels: int) -> np.ndarray:
        return self.persisted[level_columns(n_levels)].to_numpy()


def stage_semantic_ids(
    warehouse: Warehouse,
    staged: StagedVersion,
    city: str,
    kind: str,
    tokenizer: Tokenizer,
    items: pd.DataFrame,
) -> StagedCodes:
    """Assign codes to the new or changed items of ``city`` (reusing the published ones),
    write the table to ``staged`` and audit it as re-read from disk."""
    embeddings = warehouse.read_arrow("item_embeddings", city, TOKENIZER_EMBEDDING_PARTS[kind])
    previous = (
        warehouse.read_table("semantic_ids", city, kind)
        if warehouse.has_table("semantic_ids", city, kind)
        else None
    )
    result = incremental_semantic_ids(city, items, embeddings, tokenizer, previous)
    staged.write_table("semantic_ids", result.table, part=kind)
    persisted = staged.read_table("semantic_ids", part=kind)
    return StagedCodes(
        result, persisted, semantic_ids_audits(kind, tokenizer, persisted), embeddings
    )


def codes_report(
    reports: ReportStore,
    home: Path,
    city: str,
    kind: str,
    tokenizer: Tokenizer,
    items: pd.DataFrame,
    codes: StagedCodes,
) -> tuple[dict, bytes] | None:
    """Health and geography of a city's published codes and a map of their level-1 tokens,
    written and logged to the tokenizer's MLflow run when some code was assigned (or never
    reported); None when nothing changed."""
    from lgsid_pipeline.tokenizer.evaluate import tokenizer_report

    path = reports.tokenizer_codes(city, kind)
    if not codes.result.assigned and path.is_file():
        return None
    vectors, _ = aligned_embeddings(items, codes.embeddings)
    figures = tokenizer_report(tokenizer, items, vectors, codes.persisted["code"].tolist())
    figures.update(version=tokenizer.version, churn=codes.result.churn)
    reports.write(path, figures)
    log_run_metrics(
        tokenizer_model(kind),
        {
            f"{city}.{k}": float(v)
            for k, v in figures.items()
            if isinstance(v, int | float) and v is not None
        },
        home=home,
    )
    png = tokens_map_png(items, codes.tokens(tokenizer.n_levels)[:, 0], f"{city} ({kind})")
    return figures, png


def utilisation(tokens: np.ndarray, codebook_sizes: list[int]) -> list[float]:
    """Share of each level's codebook that the codes use."""
    return [len(np.unique(tokens[:, i])) / k for i, k in enumerate(codebook_sizes)]
