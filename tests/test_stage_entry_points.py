"""The stage entry points the assets adapt run without Dagster on a synthetic city: each
publishes what it owns and returns plain metadata, and a failed blocking check raises
``BlockingCheckFailed`` with the published tables left as they were."""

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_tiny_encoder, tiny_spec

from lgsid_pipeline.catalog import tokenizer_model
from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.demo import generate_city
from lgsid_pipeline.encoder import TextEncoder
from lgsid_pipeline.encoder.model import ADAPTER_META
from lgsid_pipeline.landing_watch import scan_landing
from lgsid_pipeline.stages import embeddings, semantic_ids, tokenization
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.stages.ingest import ingest_city
from lgsid_pipeline.stages.outcome import BlockingCheckFailed, Plot
from lgsid_pipeline.tokenizer.config import CodeCheckLimits, TokenizerConfig

CITY = "tiny"


def test_stage_entry_points_publish_and_block(tmp_path: Path) -> None:
    source, home = tmp_path / "source", tmp_path / "home"
    generate_city(tiny_spec(n_items=200), source)
    config = CityConfig(CITY, "synthetic", str(source))
    ctx = StageContext.at(home)
    warehouse = ctx.warehouse

    # ingest: the four tables in one version, metadata per asset, checks per asset
    published = ingest_city(ctx, config, 0.25)
    metadata = published.asset_metadata()
    assert set(metadata) == {"raw_items", "raw_interactions", "items", "interactions"}
    assert metadata["raw_items"]["dagster/row_count"] == 200
    items_meta = metadata["items"]
    assert items_meta["dagster/row_count"] + items_meta["quarantined"] == 200
    assert isinstance(items_meta["map"], Plot) and items_meta["version"] == published.version
    assert {a.asset for a in published.audits_of("items")} == {"items"}

    # a flood of duplicated ids: the rate check raises before anything is published
    items_file = source / "items.parquet"
    frame = pd.read_parquet(items_file)
    pd.concat([frame, frame, frame]).to_parquet(items_file, index=False)
    before = warehouse.published(CITY, "ingest")
    with pytest.raises(BlockingCheckFailed, match="items_quarantine_rate") as blocked:
        ingest_city(ctx, config, 0.25)
    assert "items_quarantine_rate" in {a.name for a in blocked.value.failed}
    assert warehouse.published(CITY, "ingest") == before

    # embeddings of both parts (embed_city itself: tests/test_alignment_stage.py)
    encoders = {
        part: TextEncoder.load(make_tiny_encoder(tmp_path / part, seed=seed))
        for seed, part in enumerate(embeddings.EMBEDDING_PARTS)
    }
    items = warehouse.read_table("items", CITY)
    n_items = len(items)
    with warehouse.staging(CITY, "embeddings") as staged:
        embeddings.stage_item_embeddings(warehouse, staged, CITY, items, encoders)
        warehouse.publish(staged, {})

    # a tokenizer fit stops before fitting when the champion encoder is another one
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    stale = {"base_weights": "other", "max_length": 64, "adapter_digest": "x"}
    (adapter / ADAPTER_META).write_text(json.dumps(stale))
    with pytest.raises(BlockingCheckFailed, match="inputs_current"):
        tokenization.fit_and_register(
            ctx,
            "rqkmeans",
            adapter,
            TokenizerConfig(codebook_sizes=[8, 8, 8], epochs=1),
            warm_start=False,
            cities=[CITY],
        )
    assert not ctx.model_dir(tokenizer_model("rqkmeans")).exists()

    # semantic IDs: published with their blocking audits and two warnings
    fitted = tokenization.fit_tokenizer(
        ctx,
        "rqkmeans",
        {CITY: tokenization.city_embeddings(warehouse, CITY, "rqkmeans")},
        TokenizerConfig(codebook_sizes=[8, 8, 8], seed=0),
        encoders["reference"].version,
        False,
    )
    tokenizer = fitted.tokenizer
    strict = CodeCheckLimits(min_utilisation=1.01)  # no codebook can be used beyond full
    codes = semantic_ids.assign_city_codes(ctx, CITY, "rqkmeans", tokenizer, strict)
    assert codes.metadata(CITY, "rqkmeans")["assigned"] == n_items
    warnings = {a.name: a for a in codes.audits if not a.blocking}
    assert set(warnings) == {"rqkmeans_semantic_ids_utilisation", "rqkmeans_semantic_ids_churn"}
    assert not warnings["rqkmeans_semantic_ids_utilisation"].outcome.passed
    assert all(a.outcome.passed for a in codes.audits if a.blocking)
    assert len(warehouse.read_table("semantic_ids", CITY, "rqkmeans")) == n_items


def test_landing_scan_registers_new_cities_and_skips_bad_folders(tmp_path: Path) -> None:
    root, registry = tmp_path / "landing", CityRegistry(tmp_path)
    (root / "Bad City").mkdir(parents=True)
    (root / "Bad City" / "items.csv").write_text("item_id\n")
    (root / "newtown").mkdir()
    (root / "newtown" / "items.csv").write_text("item_id,name,latitude,longitude\n")
    scan = scan_landing(root, {}, registry)
    assert scan.new_cities == ["newtown"] and list(scan.changed) == ["newtown"]
    assert [c.slug for c in registry.all()] == ["newtown"]
    assert scan.skipped and scan.skipped[0].startswith("Bad City")
    assert scan_landing(root, scan.seen, registry).changed == {}  # same files: nothing new
