"""Item embedding tables: incremental encoding and the Parquet layout of vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

EMBEDDING_COLUMNS = ("city", "item_id", "content_hash", "encoder_version", "embedding")


@dataclass
class IncrementalResult:
    """The full embedding table plus how much work was done."""

    table: pa.Table
    encoded: int
    reused: int


def embedding_matrix(table: pa.Table | pd.DataFrame) -> np.ndarray:
    """The (n, dim) float32 matrix of an embedding table, in row order."""
    column = (
        table["embedding"]
        if isinstance(table, pa.Table)
        else pa.array(table["embedding"].tolist(), type=pa.list_(pa.float32()))
    )
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), -1)


def embedding_table(
    city: str,
    item_ids: Sequence[str],
    content_hashes: Sequence[str],
    encoder_version: str | Sequence[str],
    vectors: np.ndarray,
) -> pa.Table:
    """Arrow table with a fixed-size list column of float32 vectors."""
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ValueError(f"expected {len(item_ids)} vectors, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError("embeddings contain NaN or inf")
    versions = (
        [encoder_version] * len(item_ids)
        if isinstance(encoder_version, str)
        else list(encoder_version)
    )
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    return pa.table(
        {
            "city": pa.array([city] * len(item_ids), type=pa.string()),
            "item_id": pa.array(list(item_ids), type=pa.string()),
            "content_hash": pa.array(list(content_hashes), type=pa.string()),
            "encoder_version": pa.array(versions, type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
        }
    )


def _reuse_keys(
    item_ids: Sequence[str] | pd.Series, hashes: Sequence[str] | pd.Series
) -> np.ndarray:
    """One string per (item id, content hash): what an embedding is reused by."""
    ids = pd.Series(item_ids, dtype=object).astype(str).to_numpy()
    return ids + "\0" + pd.Series(hashes, dtype=object).astype(str).to_numpy()


def incremental_embeddings(
    city: str,
    items: pd.DataFrame,
    previous: pa.Table | None,
    encoder_version: str,
    encode: Callable[[pd.DataFrame], np.ndarray],
) -> IncrementalResult:
    """Encode only items whose content hash or encoder version changed; reuse the rest.

    Items no longer present are dropped from the table; row order follows ``items``.
    """
    ids = items["item_id"].astype(str).tolist()
    hashes = items["content_hash"].astype(str).tolist()
    source = np.full(len(ids), -1)  # each item's row in ``previous`` when reused
    old_vectors = np.zeros((0, 0), dtype=np.float32)
    if previous is not None and previous.num_rows:
        old = previous.select(["item_id", "content_hash", "encoder_version"]).to_pandas()
        old_vectors = embedding_matrix(previous)
        current = np.flatnonzero((old["encoder_version"] == encoder_version).to_numpy())
        old_keys = _reuse_keys(old["item_id"], old["content_hash"])[current]
        last = ~pd.Index(old_keys).duplicated(keep="last")  # a repeated key: its last row
        found = pd.Index(old_keys[last]).get_indexer(_reuse_keys(ids, hashes))
        source[found >= 0] = current[last][found[found >= 0]]
    todo, kept = np.flatnonzero(source < 0), np.flatnonzero(source >= 0)
    new_vectors = encode(items.iloc[todo]) if len(todo) else None
    dim = new_vectors.shape[1] if new_vectors is not None else old_vectors.shape[1]
    vectors = np.zeros((len(ids), dim), dtype=np.float32)
    if len(todo):
        vectors[todo] = new_vectors
    if len(kept):
        vectors[kept] = old_vectors[source[kept]]
    table = embedding_table(city, ids, hashes, encoder_version, vectors)
    return IncrementalResult(table=table, encoded=len(todo), reused=len(kept))
