"""Which items an embedding run encodes and which it reuses (lgsid_pipeline.embeddings)."""

import numpy as np
import pandas as pd

from lgsid_pipeline.embeddings import embedding_matrix, embedding_table, incremental_embeddings


def _items(ids: list[str], hashes: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"item_id": pd.Series(ids, dtype="string"), "content_hash": pd.Series(hashes)}
    )


def test_reuses_unchanged_items_and_encodes_the_rest_in_item_order() -> None:
    previous = embedding_table(
        "c",
        ["a", "b", "c", "d", "b"],
        ["ha", "hb-old", "hc", "hd", "hb"],
        ["v1", "v1", "v0", "v1", "v1"],  # c was encoded by another encoder version
        np.arange(10, dtype=np.float32).reshape(5, 2),
    )
    items = _items(["n", "b", "a", "c", "d"], ["hn", "hb", "ha", "hc", "hd-new"])
    asked: list[list[str]] = []

    def encode(frame: pd.DataFrame) -> np.ndarray:
        asked.append(frame["item_id"].tolist())
        return np.full((len(frame), 2), -1.0, dtype=np.float32)

    result = incremental_embeddings("c", items, previous, "v1", encode)
    assert asked == [["n", "c", "d"]]  # new, other encoder version, changed content
    assert (result.encoded, result.reused) == (3, 2)
    assert result.table["item_id"].to_pylist() == ["n", "b", "a", "c", "d"]
    vectors = embedding_matrix(result.table)
    np.testing.assert_array_equal(vectors[1], [8, 9])  # b's current row, not its stale one
    np.testing.assert_array_equal(vectors[2], [0, 1])
    np.testing.assert_array_equal(vectors[[0, 3, 4]], -1)


def test_without_a_previous_table_everything_is_encoded_and_nothing_when_all_reused() -> None:
    items = _items(["a", "b"], ["ha", "hb"])
    first = incremental_embeddings(
        "c", items, None, "v1", lambda f: np.ones((len(f), 3), dtype=np.float32)
    )
    assert (first.encoded, first.reused) == (2, 0)

    def must_not_encode(frame: pd.DataFrame) -> np.ndarray:
        raise AssertionError(f"encoded {frame['item_id'].tolist()}")

    again = incremental_embeddings("c", items, first.table, "v1", must_not_encode)
    assert (again.encoded, again.reused) == (0, 2)
    np.testing.assert_array_equal(embedding_matrix(again.table), np.ones((2, 3)))
