"""Tokenizers (LGSID, RQ-KMeans, RQ-VAE), the semantic-ID table, stable retraining, lookups."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_spec

from lgsid_pipeline.cities import CityConfig
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.embeddings import embedding_table
from lgsid_pipeline.ingest import clean_items, read_city_source
from lgsid_pipeline.model_files import ModelFileError
from lgsid_pipeline.tokenizer import (
    TOKENIZERS,
    LgsidTokenizer,
    RqKMeansTokenizer,
    StaleEmbeddingsError,
    Tokenizer,
    TokenizerConfig,
    TokenizerNotFittedError,
    incremental_semantic_ids,
    parse_code,
    tokenizer_report,
)
from lgsid_pipeline.tokenizer.semantic_ids import assign_dedup

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

SMALL = TokenizerConfig(codebook_sizes=[8, 8, 4], epochs=8, batch_size=256)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, np.ndarray]:
    """A 600-item synthetic city and embeddings that carry its categories, not its geography."""
    folder = tmp_path_factory.mktemp("city")
    generate_city(tiny_spec(n_items=600), folder)
    config = CityConfig("tiny", "synthetic", str(folder))
    items = clean_items(read_city_source(config).items, config, "Tinyville").clean
    rng = np.random.default_rng(0)
    categories = pd.factorize(items["category"])[0]
    centres = rng.normal(size=(categories.max() + 1, 24))
    x = centres[categories] + 0.6 * rng.normal(size=(len(items), 24))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return items.reset_index(drop=True), x.astype(np.float32)


def _embeddings(items: pd.DataFrame, x: np.ndarray):
    return embedding_table(
        "tiny", items["item_id"].tolist(), items["content_hash"].tolist(), "enc-1", x
    )


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_codes_unique_after_dedup_and_save_load(kind: str, city, tmp_path: Path) -> None:
    items, x = city
    tokenizer = TOKENIZERS[kind](SMALL).fit(items, x)
    result = incremental_semantic_ids("tiny", items, _embeddings(items, x), tokenizer, None)
    table = result.table
    assert result.assigned == len(items) and result.reused == 0
    assert table["code"].is_unique
    levels = table[["level_1", "level_2", "level_3"]]
    assert levels.duplicated(keep=False).any(), "small codebooks should collide before dedup"
    report = tokenizer_report(tokenizer, items, x, table["code"].tolist())
    assert report["collision_rate"] > 0 and report["unique_after_dedup"]
    assert 0 < report["utilisation_min"] <= 1
    reloaded = Tokenizer.load(tokenizer.save(tmp_path / kind))
    assert reloaded.version == tokenizer.version
    np.testing.assert_array_equal(reloaded.assign(items, x), tokenizer.assign(items, x))
    # a fresh process (a run the daemon launches) that imported only the base class loads it
    probe = "import sys; from lgsid_pipeline.tokenizer.base import Tokenizer; "
    probe += "print(Tokenizer.load(sys.argv[1]).version)"
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / kind)], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == tokenizer.version, out.stderr[-500:]


def test_lgsid_level1_is_geographic(city) -> None:
    """The primary level follows admin areas; residual k-means on embeddings that hold no
    geography does not."""
    items, x = city
    lgsid = tokenizer_report(LgsidTokenizer(SMALL).fit(items, x), items, x)
    plain = tokenizer_report(RqKMeansTokenizer(SMALL).fit(items, x), items, x)
    assert lgsid["nmi_level2"] > plain["nmi_level2"] + 0.2
    assert lgsid["nmi_level1"] > plain["nmi_level1"]


def test_new_item_gets_a_code_without_retraining(city) -> None:
    items, x = city
    old, new = items.iloc[:-1], items.iloc[-1:]
    tokenizer = LgsidTokenizer(SMALL).fit(old, x[:-1])
    version = tokenizer.version
    first = incremental_semantic_ids("tiny", old, _embeddings(old, x[:-1]), tokenizer, None)
    started = time.perf_counter()
    second = incremental_semantic_ids("tiny", items, _embeddings(items, x), tokenizer, first.table)
    assert time.perf_counter() - started < 1.0
    assert (second.assigned, second.reused) == (1, len(old))
    assert tokenizer.version == version  # nothing was trained
    assert second.table["code"].is_unique
    kept = second.table.set_index("item_id").loc[first.table["item_id"], "code"]
    assert (kept.to_numpy() == first.table["code"].to_numpy()).all()
    assert second.churn == 0.0
    assert new["item_id"].iloc[0] in set(second.table["item_id"])


def test_nightly_rerun_changes_nothing(city) -> None:
    items, x = city
    tokenizer = LgsidTokenizer(SMALL).fit(items, x)
    first = incremental_semantic_ids("tiny", items, _embeddings(items, x), tokenizer, None)
    again = incremental_semantic_ids("tiny", items, _embeddings(items, x), tokenizer, first.table)
    assert (again.assigned, again.churn) == (0, 0.0)
    pd.testing.assert_frame_equal(again.table, first.table)


@pytest.mark.parametrize("cls", [LgsidTokenizer, RqKMeansTokenizer])
def test_retraining_on_the_same_data_keeps_codes(cls, city, tmp_path: Path) -> None:
    """A retrain (another seed, started from the previous fit, codewords matched) changes at
    most 5% of the codes; without that, almost every code would change."""
    items, x = city
    first = cls(SMALL).fit(items, x)
    old = incremental_semantic_ids("tiny", items, _embeddings(items, x), first, None)
    other_seed = TokenizerConfig(**{**SMALL.__dict__, "seed": 11})
    retrained = cls(other_seed).fit(items, x, previous=first)
    assert retrained.warm_started and retrained.version != first.version
    assert not first.warm_started
    assert Tokenizer.load(retrained.save(tmp_path / "retrained")).warm_started  # recorded
    new = incremental_semantic_ids("tiny", items, _embeddings(items, x), retrained, old.table)
    assert new.assigned == len(items)  # a new tokenizer version re-assigns everyone
    assert new.churn <= 0.05
    cold = cls(other_seed).fit(items, x)
    assert np.mean(np.any(cold.assign(items, x) != first.assign(items, x), axis=1)) > 0.2


def test_hungarian_matching_undoes_a_relabelling(city) -> None:
    items, x = city
    tokenizer = RqKMeansTokenizer(SMALL).fit(items, x)
    before = tokenizer.assign(items, x)
    permuted = RqKMeansTokenizer(SMALL).fit(items, x)
    rng = np.random.default_rng(3)
    permuted._permute([rng.permutation(k) for k in SMALL.codebook_sizes])
    assert (permuted.assign(items, x) != before).any()
    permuted.match_to(tokenizer)
    np.testing.assert_array_equal(permuted.assign(items, x), before)


def test_dedup_keeps_taken_and_preferred_tokens() -> None:
    tokens = np.array([[1, 2], [1, 2], [1, 2], [3, 4]])
    fixed = np.array([-1, 0, -1, -1])
    preferred = np.array([2, -1, -1, 5])
    dedup = assign_dedup(tokens, ["c", "b", "a", "d"], fixed, preferred)
    assert dedup.tolist() == [2, 0, 1, 5]


def test_bad_input_is_a_clear_error(city, tmp_path: Path) -> None:
    items, x = city
    tokenizer = LgsidTokenizer(SMALL)
    with pytest.raises(TokenizerNotFittedError):
        tokenizer.assign(items, x)
    broken = x.copy()
    broken[5, 3] = np.nan
    with pytest.raises(ValueError, match="1 of 600 embeddings contain NaN"):
        tokenizer.fit(items, broken)
    tokenizer.fit(items, x)
    with pytest.raises(ValueError, match="dimension 10 but the tokenizer was fitted on dim"):
        tokenizer.assign(items, x[:, :10])
    with pytest.raises(ValueError, match="600 items but 599 embeddings"):
        tokenizer.assign(items, x[:-1])
    with pytest.raises(ValueError, match="lack columns"):
        tokenizer.assign(items.drop(columns=["latitude"]), x)
    with pytest.raises(StaleEmbeddingsError, match="no embedding"):
        incremental_semantic_ids("tiny", items, _embeddings(items.iloc[1:], x[1:]), tokenizer, None)
    changed = items.assign(content_hash=items["content_hash"].where(items.index > 0, "other"))
    with pytest.raises(StaleEmbeddingsError, match="re-materialize item_embeddings"):
        incremental_semantic_ids("tiny", changed, _embeddings(items, x), tokenizer, None)
    with pytest.raises(ValueError, match="codebook_sizes"):
        TokenizerConfig(codebook_sizes=[8, 1])
    with pytest.raises(ValueError, match="cannot fill codebooks"):
        LgsidTokenizer(TokenizerConfig(codebook_sizes=[1024])).fit(items, x)
    folder = tokenizer.save(tmp_path / "t")
    (folder / "state.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="state.npz"):
        Tokenizer.load(folder)
    with pytest.raises(ModelFileError, match="tokenizer.json"):
        Tokenizer.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="invalid code"):
        parse_code("12-x")
    assert parse_code("12-7") == (12, 7)
