"""The semantic-ID table: de-duplication tokens, incremental assignment, churn, code strings.

Columns: ``city, item_id, content_hash, encoder_version, tokenizer, tokenizer_version,
level_1 .. level_L, dedup, code``. ``code`` is the tokens and the de-duplication token joined
by ``-`` (``12-7-3-0``), unique within a city and tokenizer.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from lgsid_pipeline.embeddings import embedding_matrix
from lgsid_pipeline.frames import positions_in, row_groups
from lgsid_pipeline.tokenizer.base import Tokenizer

_CODE = re.compile(r"^\d+(-\d+)*$")


class StaleEmbeddingsError(ValueError):
    """Item embeddings missing for some items, or computed from older item content."""


@dataclass
class SemanticIdResult:
    """The full table of one city and tokenizer, and how much work made it."""

    table: pd.DataFrame
    assigned: int
    reused: int
    churn: float | None  # share of previously coded items whose code changed (None: first run)
    assign_seconds: float


def level_columns(n_levels: int) -> list[str]:
    return [f"level_{i}" for i in range(1, n_levels + 1)]


def format_codes(tokens: np.ndarray, dedup: np.ndarray) -> list[str]:
    """``a-b-c-d`` strings from (n, L) tokens and the (n,) de-duplication tokens."""
    full = np.concatenate([np.asarray(tokens), np.asarray(dedup)[:, None]], axis=1)
    if not len(full):
        return []
    codes = full[:, 0].astype(str)
    for column in full[:, 1:].T:
        codes = np.strings.add(np.strings.add(codes, "-"), column.astype(str))
    return codes.tolist()


def parse_code(code: str) -> tuple[int, ...]:
    """The tokens of a full code or a prefix (``12-7``), or a clear ValueError."""
    text = code.strip()
    if not _CODE.match(text):
        raise ValueError(
            f"invalid code {code!r}: expected non-negative integers joined by '-', "
            "e.g. 12-7-3-0 or the prefix 12-7"
        )
    return tuple(int(t) for t in text.split("-"))


def assign_dedup(
    tokens: np.ndarray, item_ids: list[str], fixed: np.ndarray, preferred: np.ndarray
) -> np.ndarray:
    """De-duplication tokens so that (tokens, dedup) is unique per item.

    ``fixed`` holds a dedup already taken by an item (kept as is, -1 when none);
    ``preferred`` one an item would like back (its previous dedup, -1 when none), granted when
    free. Others get the smallest free index, in item-id order, so results are deterministic.
    """
    n = len(tokens)
    dedup = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return dedup
    rows = np.asarray(tokens).reshape(n, -1)
    group = row_groups(rows)
    held = np.flatnonzero(fixed >= 0)
    pairs, counts = np.unique(
        np.stack([group[held], fixed[held]], axis=1), axis=0, return_counts=True
    )
    if (counts > 1).any():
        g, d = pairs[np.argmax(counts > 1)]
        i = held[np.flatnonzero(group[held] == g)[0]]
        raise ValueError(f"previous semantic IDs repeat code {tuple(rows[i].tolist())}+{d}")
    dedup[held] = fixed[held]
    todo = np.flatnonzero(fixed < 0)
    if not len(todo):
        return dedup
    # only the code groups of items still to place need their taken dedups
    near = held[np.isin(group[held], group[todo])]
    taken: dict[int, set[int]] = {}
    for g, d in zip(group[near].tolist(), fixed[near].tolist(), strict=True):
        taken.setdefault(g, set()).add(d)
    order = sorted(todo.tolist(), key=lambda i: item_ids[i])
    groups, wishes = group.tolist(), preferred.tolist()
    waiting = []
    for i in order:
        used = taken.setdefault(groups[i], set())
        if wishes[i] >= 0 and wishes[i] not in used:
            used.add(wishes[i])
            dedup[i] = wishes[i]
        else:
            waiting.append(i)
    for i in waiting:
        used = taken[groups[i]]
        free = 0
        while free in used:
            free += 1
        used.add(free)
        dedup[i] = free
    return dedup


def unique_codes(tokens: np.ndarray, item_ids: list[str]) -> list[str]:
    """Full code strings of items coded from scratch (de-duplicated in item-id order)."""
    none = np.full(len(tokens), -1, dtype=np.int64)
    return format_codes(tokens, assign_dedup(tokens, item_ids, none, none))


def aligned_embeddings(items: pd.DataFrame, embeddings: pa.Table) -> tuple[np.ndarray, list[str]]:
    """The embedding of every item in ``items`` order and its encoder version.

    Raises ``StaleEmbeddingsError`` when an item has no embedding or one computed from other
    content (re-materialize ``item_embeddings`` first).
    """
    meta = embeddings.select(["item_id", "content_hash", "encoder_version"]).to_pandas()
    ids = items["item_id"].astype(str)
    try:
        rows = positions_in(meta["item_id"], ids)
    except ValueError as error:
        raise StaleEmbeddingsError(
            f"the embeddings table has {error}; re-materialize item_embeddings"
        ) from error
    found = rows >= 0
    if not found.all():
        raise StaleEmbeddingsError(
            f"{int((~found).sum())} items have no embedding (first {ids[~found].iloc[0]!r}); "
            "materialize item_embeddings for this city first"
        )
    stale = (
        meta["content_hash"].astype(str).to_numpy()[rows]
        != items["content_hash"].astype(str).to_numpy()
    )
    if stale.any():
        raise StaleEmbeddingsError(
            f"{int(stale.sum())} items changed since their embedding was computed; "
            "re-materialize item_embeddings for this city first"
        )
    vectors = embedding_matrix(embeddings)[rows]
    return vectors, meta["encoder_version"].astype(str).to_numpy()[rows].tolist()


def incremental_semantic_ids(
    city: str,
    items: pd.DataFrame,
    embeddings: pa.Table,
    tokenizer: Tokenizer,
    previous: pd.DataFrame | None,
) -> SemanticIdResult:
    """Codes for every item of a city; only new or changed items are assigned.

    A row of ``previous`` is reused when item, content hash, encoder version and tokenizer
    version all match. Items that keep their tokens keep their de-duplication token.
    """
    vectors, encoder_versions = aligned_embeddings(items, embeddings)
    ids = items["item_id"].astype(str).tolist()
    hashes = items["content_hash"].astype(str).tolist()
    version = tokenizer.version
    columns = level_columns(tokenizer.n_levels)
    tokens = np.zeros((len(ids), tokenizer.n_levels), dtype=np.int64)
    fixed = np.full(len(ids), -1, dtype=np.int64)
    preferred = np.full(len(ids), -1, dtype=np.int64)
    old_codes: np.ndarray | None = None  # each item's previous code (None: not coded before)
    todo = np.ones(len(ids), dtype=bool)
    changed_rows: pd.DataFrame | None = None  # previous rows of items assigned again
    changed_idx = np.zeros(0, dtype=np.int64)
    if previous is not None and len(previous):
        prev = previous[~previous["item_id"].astype(str).duplicated()].reset_index(drop=True)
        at = positions_in(prev["item_id"], ids)
        known_idx = np.flatnonzero(at >= 0)
        old_codes = np.full(len(ids), None, dtype=object)
        old_codes[known_idx] = prev["code"].astype(str).to_numpy()[at[known_idx]]
        if len(known_idx) and all(c in prev.columns for c in columns):
            rows = prev.iloc[at[known_idx]]
            same = (
                (rows["content_hash"].astype(str).to_numpy() == np.asarray(hashes)[known_idx])
                & (
                    rows["encoder_version"].astype(str).to_numpy()
                    == np.asarray(encoder_versions)[known_idx]
                )
                & (rows["tokenizer_version"].astype(str).to_numpy() == version)
            )
            reuse = known_idx[same]
            tokens[reuse] = rows.loc[same, columns].to_numpy(dtype=np.int64)
            fixed[reuse] = rows.loc[same, "dedup"].to_numpy(dtype=np.int64)
            todo[reuse] = False
            changed_rows, changed_idx = rows.loc[~same], known_idx[~same]
    started = time.perf_counter()
    if todo.any():
        tokens[todo] = tokenizer.assign(items.iloc[np.flatnonzero(todo)], vectors[todo])
    assign_seconds = time.perf_counter() - started
    if changed_rows is not None and len(changed_idx):
        old_tokens = changed_rows[columns].to_numpy(dtype=np.int64)
        keep = (old_tokens == tokens[changed_idx]).all(axis=1)
        preferred[changed_idx[keep]] = changed_rows["dedup"].to_numpy(dtype=np.int64)[keep]
    dedup = assign_dedup(tokens, ids, fixed, preferred)
    codes = format_codes(tokens, dedup)
    table = pd.DataFrame(
        {
            "city": city,
            "item_id": ids,
            "content_hash": hashes,
            "encoder_version": encoder_versions,
            "tokenizer": tokenizer.kind,
            "tokenizer_version": version,
            **{c: tokens[:, i].astype(np.int32) for i, c in enumerate(columns)},
            "dedup": dedup.astype(np.int32),
            "code": codes,
        }
    )
    churn = None
    if old_codes is not None:
        coded = np.flatnonzero(old_codes != None)  # noqa: E711 (element-wise)
        churn = float((old_codes[coded] != np.asarray(codes)[coded]).mean()) if len(coded) else 0.0
    return SemanticIdResult(table, int(todo.sum()), int((~todo).sum()), churn, assign_seconds)
