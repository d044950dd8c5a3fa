"""`lgsid lookup`: an item's semantic ID, or the items under a code or prefix."""

from __future__ import annotations

from typing import Any

import pandas as pd

from lgsid_pipeline.catalog import TOKENIZER_KINDS, semantic_ids_asset
from lgsid_pipeline.config import validate_city_slug
from lgsid_pipeline.tokenizer.semantic_ids import parse_code
from lgsid_pipeline.warehouse import TableNotFoundError, Warehouse


def _require_codes(warehouse: Warehouse, city: str, tokenizer: str) -> None:
    validate_city_slug(city)
    if tokenizer not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; one of {', '.join(TOKENIZER_KINDS)}")
    if not warehouse.has_table("semantic_ids", city, tokenizer):
        asset = semantic_ids_asset(tokenizer)
        raise TableNotFoundError(
            f"city {city!r} has no {tokenizer} semantic IDs; run "
            f"`lgsid materialize --city {city} --select {asset}`"
        )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in frame.drop(columns=["matches"], errors="ignore").to_dict("records"):
        row = {k: (None if pd.isna(v) else v) for k, v in row.items()}
        row["admin_path"] = " > ".join(
            str(row[k])
            for k in ("admin_l1_name", "admin_l2_name", "admin_l3_code")
            if row.get(k) is not None
        )
        out.append(row)
    return out


def lookup_item(
    warehouse: Warehouse, city: str, item_id: str, tokenizer: str = "lgsid"
) -> dict[str, Any] | None:
    """The item's code, name and admin path, or None when the city has no such item."""
    _require_codes(warehouse, city, tokenizer)
    rows = warehouse.query(
        "lookup_item.sql", {"city": city, "tokenizer": tokenizer, "item_id": str(item_id)}
    )
    return _records(rows)[0] if len(rows) else None


def lookup_code(
    warehouse: Warehouse, city: str, code: str, tokenizer: str = "lgsid", limit: int = 50
) -> tuple[int, list[dict[str, Any]]]:
    """(number of items under the code or prefix, the first ``limit`` of them by code)."""
    _require_codes(warehouse, city, tokenizer)
    canonical = "-".join(map(str, parse_code(code)))
    rows = warehouse.query(
        "lookup_code.sql",
        {"city": city, "tokenizer": tokenizer, "code": canonical, "limit": int(limit)},
    )
    return (int(rows["matches"].iloc[0]) if len(rows) else 0), _records(rows)


class UnknownUserError(LookupError):
    """A user with no cached recommendations (not in the city's check-ins)."""


def cached_recommendations(
    warehouse: Warehouse, city: str, user_id: str, k: int = 10
) -> list[dict[str, Any]]:
    """A user's top-``k`` items from ``user_topk_cache`` (serving is this lookup)."""
    validate_city_slug(city)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not warehouse.has_table("user_topk_cache", city):
        raise TableNotFoundError(
            f"city {city!r} has no user_topk_cache; run "
            f"`lgsid materialize --city {city} --select user_topk_cache`"
        )
    rows = warehouse.query("user_topk.sql", {"city": city, "user_id": str(user_id), "k": k})
    if rows.empty:
        raise UnknownUserError(
            f"user {user_id!r} has no cached recommendations in {city!r} "
            "(unknown user, or no check-in before the cache was refreshed)"
        )
    return [
        {k_: (None if pd.isna(v) else v) for k_, v in row.items()}
        for row in rows.to_dict("records")
    ]
