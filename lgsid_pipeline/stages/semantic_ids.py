"""The semantic-ID stage as plain functions: assign a city's new or changed items their
codes from the champion tokenizer of a kind, audit the staged table as re-read from disk,
publish it, and report the codes' health (utilisation, collisions, geography, churn)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from lgsid_pipeline.catalog import (
    TOKENIZER_EMBEDDING_PARTS,
    semantic_ids_asset,
    tokenizer_asset,
    tokenizer_model,
)
from lgsid_pipeline.plots import tokens_map_png
from lgsid_pipeline.quality import Audit, CheckOutcome, check_encoder_version, check_unique
from lgsid_pipeline.registry import (
    log_run_metrics,
)
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.outcome import (
    UNCHANGED,
    Metadata,
    Plot,
    publish_if_passed,
)
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.config import CodeCheckLimits
from lgsid_pipeline.tokenizer.semantic_ids import (
    SemanticIdResult,
    aligned_embeddings,
    incremental_semantic_ids,
    level_columns,
)
from lgsid_pipeline.warehouse import StagedVersion, Warehouse

# the code-health figures shown in a semantic-ID table's metadata
CODE_FIGURES = (
    "utilisation_min",
    "collision_rate",
    "largest_bucket",
    "nmi_level1",
    "nmi_level2",
    "reconstruction_error",
)


def semantic_ids_checks(kind: str) -> tuple[dict[str, str], dict[str, str]]:
    """The blocking checks and the warnings of a semantic-ID table, with descriptions."""
    asset = semantic_ids_asset(kind)
    blocking = {
        f"{asset}_unique": "every item has a distinct full code",
        f"{asset}_encoder_matches": "codes come from embeddings of the encoder the tokenizer "
        "was fitted on",
    }
    warnings = {
        f"{asset}_utilisation": "every level uses enough of its codebook",
        f"{asset}_churn": "codes changed by this run stay below the limit",
    }
    return blocking, warnings


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
    ctx: StageContext,
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

    reports = ctx.reports
    path = reports.tokenizer_codes(city, kind)
    if not codes.result.assigned and path.is_file():
        return None
    vectors, _ = aligned_embeddings(items, codes.embeddings)
    result = codes.result  # the tokens of reused items are what assigning again would give
    assigned = (
        (codes.tokens(tokenizer.n_levels), result.assign_seconds, result.assigned)
        if result.assigned
        else None
    )
    figures = tokenizer_report(
        tokenizer, items, vectors, codes.persisted["code"].tolist(), assigned
    )
    figures.update(version=tokenizer.version, churn=codes.result.churn)
    reports.write(path, figures)
    log_run_metrics(
        tokenizer_model(kind),
        {
            f"{city}.{k}": float(v)
            for k, v in figures.items()
            if isinstance(v, int | float) and v is not None
        },
        home=ctx.home,
    )
    png = tokens_map_png(items, codes.tokens(tokenizer.n_levels)[:, 0], f"{city} ({kind})")
    return figures, png


def utilisation(tokens: np.ndarray, codebook_sizes: list[int]) -> list[float]:
    """Share of each level's codebook that the codes use."""
    return [len(np.unique(tokens[:, i])) / k for i, k in enumerate(codebook_sizes)]


@dataclass
class PublishedCodes:
    """A city's published semantic IDs of one kind, with every check and the report."""

    codes: StagedCodes
    version: str
    tokenizer: Tokenizer
    audits: list[Audit]
    report: tuple[dict, bytes] | None
    unchanged: bool = False

    def metadata(self, city: str, kind: str) -> Metadata:
        result = self.codes.result
        out: Metadata = {
            "dagster/row_count": len(self.codes.persisted),
            "version": self.version,
            "unchanged": self.unchanged,
            "assigned": result.assigned,
            "reused": result.reused,
            "churn": result.churn if result.churn is not None else 0.0,
            "tokenizer_version": self.tokenizer.version,
            "encoder_version": self.tokenizer.encoder_version or "",
        }
        if self.report is not None:
            figures, codes_map = self.report
            out.update({k: figures[k] for k in CODE_FIGURES})
            out["map"] = Plot(city, f"{kind}_codes_map", codes_map)
        return out


def code_warnings(
    kind: str, codes: StagedCodes, tokenizer: Tokenizer, limits: CodeCheckLimits
) -> list[Audit]:
    """The warning checks of a city's codes: codebook utilisation and churn."""
    asset = semantic_ids_asset(kind)
    used = utilisation(codes.tokens(tokenizer.n_levels), tokenizer.codebook_sizes)
    churn = codes.result.churn or 0.0
    return [
        Audit(
            f"{asset}_utilisation",
            asset,
            CheckOutcome(
                min(used) >= limits.min_utilisation,
                f"least-used level uses {min(used):.2f} of its codebook "
                f"(limit {limits.min_utilisation})",
                {"per_level": ", ".join(f"{u:.3f}" for u in used)},
            ),
            blocking=False,
        ),
        Audit(
            f"{asset}_churn",
            asset,
            CheckOutcome(
                churn <= limits.max_churn,
                f"{churn:.4f} of codes changed (limit {limits.max_churn})",
                {"churn": churn, "limit": limits.max_churn},
            ),
            blocking=False,
        ),
    ]


def assign_city_codes(
    ctx: StageContext, city: str, kind: str, tokenizer: Tokenizer, limits: CodeCheckLimits
) -> PublishedCodes:
    """Assign codes to ``city``'s new or changed items, audit the staged table and publish
    it (``BlockingCheckFailed`` when an audit fails), then report the codes' health."""
    asset, warehouse = semantic_ids_asset(kind), ctx.warehouse
    items = warehouse.read_table("items", city)
    with warehouse.staging(city, "semantic_ids") as staged:
        codes = stage_semantic_ids(warehouse, staged, city, kind, tokenizer, items)
        pointer = publish_if_passed(
            warehouse,
            staged,
            f"{city} {asset}",
            codes.audits,
            {"run_id": ctx.run_id, "tokenizer_version": tokenizer.version},
        )
    warehouse.refresh_catalog()
    result = codes.result
    ctx.log(
        f"{city}: published {asset} in version {pointer['version']}: assigned "
        f"{result.assigned}, reused {result.reused}, churn {result.churn}"
    )
    audits = list(codes.audits)
    if tokenizer.encoder_version is None:
        audits.append(
            Audit(
                f"{asset}_encoder_matches",
                asset,
                CheckOutcome(True, "the tokenizer predates encoder tracking; not checked"),
            )
        )
    audits += code_warnings(kind, codes, tokenizer, limits)
    report = codes_report(ctx, city, kind, tokenizer, items, codes)
    return PublishedCodes(codes, pointer["version"], tokenizer, audits, report, pointer[UNCHANGED])
