"""The catalogue of names: every kind it lists exists, and model names round-trip."""

from __future__ import annotations

import dagster as dg
import pytest

from lgsid_pipeline import catalog
from lgsid_pipeline.definitions import defs
from lgsid_pipeline.ingest import INGEST_TABLES
from lgsid_pipeline.tokenizer import TOKENIZERS


def test_every_listed_kind_and_asset_exists() -> None:
    assert set(TOKENIZERS) == set(catalog.TOKENIZER_KINDS)
    graph = defs.resolve_asset_graph()
    names = {key.to_user_string() for key in graph.get_all_asset_keys()}
    listed = {
        *catalog.TOKENIZER_ASSETS,
        *catalog.SEMANTIC_ID_ASSETS,
        *catalog.BACKBONES,
        *catalog.GENERATIVE_KINDS,
        *catalog.GLOBAL_MODEL_ASSETS.values(),
        *catalog.CITY_CODE_ASSETS,
    }
    assert listed <= names, listed - names
    assert tuple(INGEST_TABLES) == catalog.INGEST_ASSETS  # described where they are checked
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {catalog.CITY_JOB_NAME, catalog.GLOBAL_JOB_NAME, catalog.NIGHTLY_JOB_NAME} <= jobs
    assert defs.resolve_sensor_def(catalog.RETRAIN_SENSOR_NAME)
    for kind in catalog.TOKENIZER_KINDS:  # global models, per-city codes
        assert graph.get(dg.AssetKey(catalog.tokenizer_asset(kind))).partitions_def is None
        assert graph.get(dg.AssetKey(catalog.semantic_ids_asset(kind))).partitions_def


def test_model_names_round_trip() -> None:
    for backbone in catalog.BACKBONES:
        parsed = catalog.parse_model_name(catalog.ctr_model(backbone, "new-york"))
        assert (parsed.asset, parsed.city) == (backbone, "new-york")
    parsed = catalog.parse_model_name(catalog.generative_model("tiger", "sthgcn-nyc"))
    assert (parsed.asset, parsed.city) == ("tiger", "sthgcn-nyc")
    parsed = catalog.parse_model_name(catalog.tokenizer_model("rqvae"))
    assert (parsed.asset, parsed.city) == ("rqvae_tokenizer", None)
    for foreign in ("ctr-tiger-x", "gen-din-x", "lgsid-tokenizer-x", "deploy-smoke", "ctr--x"):
        assert catalog.parse_model_name(foreign) is None, foreign
    with pytest.raises(ValueError, match="unknown ctr model"):
        catalog.ctr_model("bert4rec", "x")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        catalog.semantic_ids_asset("bpe")
