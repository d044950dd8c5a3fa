"""Data-quality checks as plain functions; the Dagster layer turns them into asset checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lgsid_pipeline.frames import positions_in

# Share of a source's rows quarantined above which the ingest's blocking checks fail.
MAX_QUARANTINE_RATE = 0.25


@dataclass
class CheckOutcome:
    """Whether a check passed, a one-line description, and figures to show with it."""

    passed: bool
    description: str
    metadata: dict[str, float | int | str] = field(default_factory=dict)


@dataclass
class Audit:
    """One check's outcome, on what a step persisted or is about to use; a failed blocking
    check stops the step before it publishes, a failed warning is only reported."""

    name: str
    asset: str
    outcome: CheckOutcome
    blocking: bool = True


def check_encoder_version(
    versions_by_city: dict[str, Sequence[str]], expected: str, remedy: str
) -> CheckOutcome:
    """Every embedding of every city comes from the ``expected`` encoder version; the
    failure says which cities are stale and ``remedy``, what to do about it."""
    stale = {
        city: int(sum(v != expected for v in versions))
        for city, versions in versions_by_city.items()
    }
    stale = {city: n for city, n in stale.items() if n}
    total = sum(len(v) for v in versions_by_city.values())
    if stale:
        where = ", ".join(
            f"{city}: {n} of {len(versions_by_city[city])}" for city, n in stale.items()
        )
        return CheckOutcome(
            False,
            f"{sum(stale.values())} embeddings are not from encoder {expected} ({where}); {remedy}",
            {
                "stale_embeddings": sum(stale.values()),
                "embeddings": total,
                "expected_encoder_version": expected,
                "stale_cities": ", ".join(stale),
            },
        )
    return CheckOutcome(
        True,
        f"all {total} embeddings from encoder {expected}",
        {"stale_embeddings": 0, "embeddings": total, "expected_encoder_version": expected},
    )


def check_covers(items: pd.DataFrame, table: pd.DataFrame) -> CheckOutcome:
    """``table`` has exactly one row per item of ``items``, computed from its current
    content (same ``content_hash``)."""
    keyed = table.drop_duplicates("item_id")
    duplicated = len(table) - len(keyed)
    ids = items["item_id"].astype(str)
    rows = positions_in(keyed["item_id"], ids)
    found = rows >= 0
    missing = int((~found).sum())
    stale = int(
        (
            keyed["content_hash"].astype(str).to_numpy()[rows[found]]
            != items["content_hash"].astype(str).to_numpy()[found]
        ).sum()
    )
    extra = len(keyed) - len(np.unique(rows[found]))
    bad = duplicated + missing + stale + extra
    return CheckOutcome(
        bad == 0,
        f"{missing} items missing, {stale} stale, {extra} unknown, {duplicated} duplicated rows",
        {"missing": missing, "stale": stale, "unknown": extra, "duplicated": duplicated},
    )


def check_schema(frame: pd.DataFrame, expected: Sequence[str]) -> CheckOutcome:
    """The table has every expected column."""
    missing = [c for c in expected if c not in frame.columns]
    return CheckOutcome(
        not missing,
        f"missing columns: {missing}" if missing else "schema ok",
        {"columns": len(frame.columns), "missing": ", ".join(missing)},
    )


def check_coordinates(frame: pd.DataFrame) -> CheckOutcome:
    """Every latitude is in [-90, 90] and every longitude in [-180, 180]."""
    bad = ~(frame["latitude"].between(-90, 90) & frame["longitude"].between(-180, 180))
    n_bad = int(bad.sum())
    return CheckOutcome(
        n_bad == 0, f"{n_bad} rows with coordinates out of range", {"out_of_range": n_bad}
    )


def check_unique(frame: pd.DataFrame, key: Sequence[str]) -> CheckOutcome:
    """No two rows share the key."""
    n_dup = int(frame.duplicated(list(key)).sum())
    return CheckOutcome(
        n_dup == 0, f"{n_dup} duplicate {'/'.join(key)} values", {"duplicates": n_dup}
    )


def check_quarantine_rate(n_clean: int, n_quarantined: int, max_rate: float) -> CheckOutcome:
    """The quarantined share of raw rows is at most ``max_rate``."""
    total = n_clean + n_quarantined
    rate = n_quarantined / total if total else 0.0
    return CheckOutcome(
        rate <= max_rate,
        f"quarantine rate {rate:.4f} (limit {max_rate:.4f})",
        {"quarantine_rate": rate, "limit": max_rate, "quarantined": n_quarantined, "raw": total},
    )


def check_reconciles(n_raw: int, n_clean: int, n_quarantined: int) -> CheckOutcome:
    """Every raw row is either clean or quarantined: raw = clean + quarantined."""
    ok = n_raw == n_clean + n_quarantined
    return CheckOutcome(
        ok,
        f"raw {n_raw} = clean {n_clean} + quarantined {n_quarantined}: {ok}",
        {"raw": n_raw, "clean": n_clean, "quarantined": n_quarantined},
    )


def check_accounted(
    raw_rows: pd.Series, clean_rows: pd.Series, quarantined_rows: pd.Series
) -> CheckOutcome:
    """Every raw row is in exactly one place: for each ``source_row`` key, its count in the raw
    table equals its count in the clean table plus its count in the quarantine table.

    Counts ``missing`` (raw rows found in neither), ``duplicated`` (rows found more often than
    the raw table has them, e.g. both clean and quarantined) and ``unknown`` (clean or
    quarantined rows whose key is not in the raw table); passes only when all three are 0 and
    raw = clean + quarantined.
    """
    raw = raw_rows.astype("string").value_counts()
    out = pd.concat([clean_rows.astype("string"), quarantined_rows.astype("string")])
    out = out.value_counts()
    both = pd.concat([raw.rename("raw"), out.rename("out")], axis=1).fillna(0)
    known = both["raw"] > 0
    missing = int((both["raw"] - both["out"]).clip(lower=0)[known].sum())
    duplicated = int((both["out"] - both["raw"]).clip(lower=0)[known].sum())
    unknown = int(both.loc[~known, "out"].sum())
    n_raw, n_clean, n_quarantined = len(raw_rows), len(clean_rows), len(quarantined_rows)
    ok = (missing == duplicated == unknown == 0) and n_raw == n_clean + n_quarantined
    return CheckOutcome(
        ok,
        f"raw {n_raw} vs clean {n_clean} + quarantined {n_quarantined}: {missing} missing, "
        f"{duplicated} duplicated, {unknown} unknown",
        {
            "raw": n_raw,
            "clean": n_clean,
            "quarantined": n_quarantined,
            "missing": missing,
            "duplicated": duplicated,
            "unknown": unknown,
        },
    )
