"""One catalogue of the names the system runs on: tokenizer kinds and code variants,
recommender backbones and generative kinds, and the asset, table and registered-model names
built from them. Every other module takes these names from here; nothing else lists them.

Why some names differ from the pattern: the LGSID tokenizer's assets are ``tokenizer`` and
``semantic_ids`` (the method's own; the baselines are prefixed with their kind), and all three
kinds' codes are parts of one ``semantic_ids`` table (``part`` = kind).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LGSID = "lgsid"
BASELINE_KINDS = ("rqkmeans", "rqvae")
TOKENIZER_KINDS = (LGSID, *BASELINE_KINDS)
# The item_embeddings part each kind fits on: the aligned encoder's, or the plain one's.
TOKENIZER_EMBEDDING_PARTS = {LGSID: "aligned", "rqkmeans": "reference", "rqvae": "reference"}
TOKENIZER_SUMMARIES = {
    LGSID: "LGSID: a geographic primary level (k-means on location and category features) "
    "and learnable residual codebooks over the aligned embeddings.",
    "rqkmeans": "RQ-KMeans: residual k-means on the plain encoder's embeddings.",
    "rqvae": "RQ-VAE (TIGER): a residual-quantised autoencoder on the plain encoder's embeddings.",
}
ID_ONLY = "none"  # a recommender on item ids alone
# The order recommenders train the code variants in (baselines first).
CODE_VARIANTS = (*BASELINE_KINDS, LGSID)
CTR_VARIANTS = (ID_ONLY, *CODE_VARIANTS)

BACKBONES = ("din", "dien", "sim", "twin", "eta")
# backbones that also attend over top-k behaviours of the long sequence
LONG_SEQUENCE_BACKBONES = ("sim", "twin", "eta")
GENERATIVE_KINDS = ("tiger", "onerec")
# how a generative model reads the history (GenerativeConfig.history_encoding)
HISTORY_ENCODINGS = ("tokens", "items")
SERVED_KIND = "tiger"  # the generative kind whose champion `user_topk_cache` serves

REWARD_MODEL = "lgsid-reward-model"
ALIGNED_ENCODER = "lgsid-aligned-encoder"
SEMANTIC_IDS_TABLE = "semantic_ids"


def _check_kind(kind: str) -> None:
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer {kind!r}; one of {', '.join(TOKENIZER_KINDS)}")


def tokenizer_asset(kind: str) -> str:
    """The global asset that fits a tokenizer kind."""
    _check_kind(kind)
    return "tokenizer" if kind == LGSID else f"{kind}_tokenizer"


def semantic_ids_asset(kind: str) -> str:
    """The per-city asset of a tokenizer kind's codes (part ``kind`` of ``semantic_ids``)."""
    _check_kind(kind)
    return SEMANTIC_IDS_TABLE if kind == LGSID else f"{kind}_{SEMANTIC_IDS_TABLE}"


def tokenizer_model(kind: str) -> str:
    """The registered model name of a tokenizer kind."""
    _check_kind(kind)
    return f"{kind}-tokenizer"


TOKENIZER_ASSETS = tuple(tokenizer_asset(k) for k in TOKENIZER_KINDS)
SEMANTIC_ID_ASSETS = tuple(semantic_ids_asset(k) for k in TOKENIZER_KINDS)
# The ingest step's four assets (one version of the city's ``ingest`` stage).
INGEST_ASSETS = ("raw_items", "raw_interactions", "items", "interactions")
ITEM_EMBEDDINGS_ASSET = "item_embeddings"
# What the nightly run refreshes per city: ingest, then embeddings and codes of new items.
CITY_CODE_ASSETS = (*INGEST_ASSETS, ITEM_EMBEDDINGS_ASSET, *SEMANTIC_ID_ASSETS)
# Dagster pools: steps that read the raw sources, and steps that compute with torch (their
# torch threads are the cores divided by the compute pool's limit, lgsid_pipeline.threads).
SOURCE_READ_POOL = "source_read"
COMPUTE_POOL = "compute"
# Registered global model -> the asset that trains it.
REWARD_MODEL_ASSET = "reward_model"
ALIGNED_ENCODER_ASSET = "aligned_encoder"
GLOBAL_MODEL_ASSETS = {
    REWARD_MODEL: REWARD_MODEL_ASSET,
    ALIGNED_ENCODER: ALIGNED_ENCODER_ASSET,
    **{tokenizer_model(k): tokenizer_asset(k) for k in TOKENIZER_KINDS},
}

# Per-city models: ctr-<backbone>-<city>, gen-<generative kind>-<city>.
_FAMILIES = {"ctr": BACKBONES, "gen": GENERATIVE_KINDS}
_CITY_MODEL = re.compile(r"(ctr|gen)-([a-z]+)-([a-z0-9][a-z0-9_-]*)")


@dataclass(frozen=True)
class ModelName:
    """A registered model name taken apart: the asset that trains it, and its city (None
    for a global model)."""

    name: str
    asset: str
    city: str | None


def ctr_model(backbone: str, city: str) -> str:
    """The registered model name of a CTR backbone trained on one city."""
    return _city_model("ctr", backbone, city)


def generative_model(kind: str, city: str) -> str:
    """The registered model name of a generative kind trained on one city."""
    return _city_model("gen", kind, city)


def parse_model_name(name: str) -> ModelName | None:
    """The asset (and city) behind a registered model name, or None for a name the pipeline
    does not register."""
    if name in GLOBAL_MODEL_ASSETS:
        return ModelName(name, GLOBAL_MODEL_ASSETS[name], None)
    match = _CITY_MODEL.fullmatch(name)
    if match is None or match.group(2) not in _FAMILIES[match.group(1)]:
        return None
    return ModelName(name, match.group(2), match.group(3))


def _city_model(family: str, asset: str, city: str) -> str:
    if asset not in _FAMILIES[family]:
        raise ValueError(f"unknown {family} model {asset!r}; one of {', '.join(_FAMILIES[family])}")
    return f"{family}-{asset}-{city}"


# Dagster jobs and the sensor that drives a retrain (jobs: lgsid_pipeline.definitions).
CITY_JOB_NAME = "city_pipeline"
GLOBAL_JOB_NAME = "global_models"
NIGHTLY_JOB_NAME = "nightly_retokenization"
RETRAIN_SENSOR_NAME = "retrain_stages"
