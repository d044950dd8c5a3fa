"""Test helpers shared by several test modules: a tiny synthetic city spec and a tiny
randomly initialised text encoder (imported as ``from helpers import ...``; pytest puts
``tests/`` on ``sys.path``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from lgsid_pipeline.demo import SyntheticCitySpec


def tiny_spec(name: str = "Tinyville", seed: int = 7, n_items: int = 300) -> SyntheticCitySpec:
    """A small city for unit tests (a few hundred items, generated in well under a second)."""
    return SyntheticCitySpec(
        name,
        seed=seed,
        n_items=n_items,
        days=60,
        center_lat=45.0 + seed % 10,
        center_lon=7.0 + seed % 13,
        radius_km=float(np.clip(3.0 * np.sqrt(n_items / 300), 2.5, 10.0)),
    )


def make_tiny_encoder(
    folder: str | Path, hidden_size: int = 32, layers: int = 2, heads: int = 2, seed: int = 0
) -> Path:
    """Write a tiny randomly initialised BERT with the MiniLM tokenizer into ``folder``."""
    if hidden_size % heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by heads {heads}")
    import torch
    from transformers import BertConfig, BertModel

    from lgsid_pipeline.encoder.model import TOKENIZER_FILES, default_encoder_path, quiet_hf

    source = default_encoder_path()
    base = json.loads((source / "config.json").read_text())
    config = BertConfig(
        vocab_size=base["vocab_size"],
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        max_position_embeddings=128,
        pad_token_id=base.get("pad_token_id", 0),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_hf():
        model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    return folder


def ingested_home(home: Path, source: Path, city: str = "tiny", n_items: int = 300) -> Path:
    """An LGSID home holding a synthetic city's clean items and check-ins, written without
    Dagster (for the tests of the stage functions)."""
    from lgsid_pipeline.cities import CityConfig
    from lgsid_pipeline.demo import generate_city
    from lgsid_pipeline.ingest import clean_interactions, clean_items, read_city_source
    from lgsid_pipeline.warehouse import Warehouse

    generate_city(tiny_spec(n_items=n_items), source)
    config = CityConfig(city, "synthetic", str(source))
    data = read_city_source(config)
    items = clean_items(data.items, config, "Tinyville").clean
    warehouse = Warehouse(home)
    warehouse.write_table("items", city, items)
    warehouse.write_table(
        "interactions", city, clean_interactions(data.interactions, items, city).clean
    )
    return home
