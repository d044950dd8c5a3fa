"""Id lookups by hash index (lgsid_pipeline.frames)."""

import numpy as np
import pandas as pd
import pytest

from lgsid_pipeline.frames import is_in, positions_in, row_groups


def test_positions_in_finds_rows_and_marks_absent_ids() -> None:
    keys = pd.Series(["b", "a", "c"], dtype="string")
    wanted = pd.Series(["a", "x", "c", "a"])
    np.testing.assert_array_equal(positions_in(keys, wanted), [1, -1, 2, 1])


def test_positions_in_reads_both_sides_as_strings() -> None:
    np.testing.assert_array_equal(positions_in(pd.Series([1, 2]), pd.Series(["2", "1"])), [1, 0])


def test_is_in_matches_pandas_isin_and_never_counts_a_missing_value() -> None:
    values = pd.Series(["a", None, "c", "x", "a", ""], dtype="string")
    known = {"a", "c", "", None}
    expected = values.isin(["a", "c", ""]).to_numpy() & values.notna().to_numpy()
    np.testing.assert_array_equal(is_in(values, known), expected)
    np.testing.assert_array_equal(is_in(values, pd.Index(["x"])), [0, 0, 0, 1, 0, 0])
    assert is_in(pd.Series([], dtype="string"), ["a"]).shape == (0,)


def test_positions_in_refuses_duplicated_keys() -> None:
    with pytest.raises(ValueError, match="1 duplicated keys"):
        positions_in(pd.Series(["a", "b", "a"]), pd.Series(["a"]))


@pytest.mark.parametrize(
    "rows",
    [
        np.random.default_rng(0).integers(0, 7, size=(500, 4)),  # small tokens: one key a row
        np.random.default_rng(1).integers(0, 2**40, size=(300, 3)),  # keys overflow: fallback
        np.array([[0, -1], [0, -1], [2, 5]]),  # negative: fallback
        np.random.default_rng(2).random((50, 2)).round(1),  # floats: fallback
        np.random.default_rng(3).integers(0, 2, size=(40, 3)).astype(bool),
    ],
)
def test_row_groups_number_rows_as_their_sorted_distinct_values(rows: np.ndarray) -> None:
    expected = np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1)
    groups = row_groups(rows)
    assert groups.dtype == np.int64
    np.testing.assert_array_equal(groups, expected)


def test_check_covers_counts_missing_stale_unknown_and_duplicated_rows() -> None:
    from lgsid_pipeline.quality import check_covers

    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "content_hash": ["1", "2", "3", "4"]})
    table = pd.DataFrame(
        {"item_id": ["a", "b", "b", "c", "z"], "content_hash": ["1", "2", "2", "9", "5"]}
    )
    outcome = check_covers(items, table)
    assert not outcome.passed
    assert outcome.metadata == {"missing": 1, "stale": 1, "unknown": 1, "duplicated": 1}
    assert check_covers(items, items).passed
