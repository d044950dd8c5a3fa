"""Codes for the ablations of the paper's Tables 3 to 5, written as extra ``semantic_ids``
parts beside the pipeline's own (``lgsid``, ``rqkmeans``, ``rqvae``):

- ``lgsid_plain_encoder``: the LGSID tokenizer on the plain encoder's embeddings (no G-DPO);
- ``lgsid_no_geo_level``: LGSID without its geographic primary level, i.e. residual
  k-means levels only on the aligned embeddings;
- ``lgsid_no_similarity``: LGSID on an encoder aligned by G-DPO without the similarity
  regulariser (lambda 0), trained on the same triples with the same settings as the
  pipeline's aligned encoder (``ALIGNMENT_RUN_CONFIG``), its embeddings written as the
  ``aligned_no_similarity`` part of ``item_embeddings``.

Each tokenizer is fitted once on the real cities together, with the pipeline's tokenizer
settings, as the pipeline fits its own; other cities get codes from it, frozen.
"""

from __future__ import annotations

import numpy as np

ABLATION_CODES = {
    "lgsid_plain_encoder": ("lgsid", "reference"),
    "lgsid_no_geo_level": ("rqkmeans", "aligned"),
    "lgsid_no_similarity": ("lgsid", "aligned_no_similarity"),
}
NO_SIMILARITY_PART = "aligned_no_similarity"
NO_SIMILARITY_ADAPTER = "ablation-aligned-no-similarity"  # its LoRA adapter, in the home


def ensure_no_similarity_embeddings(fit_cities: list[str], cities: list[str]) -> list[str]:
    """Align an encoder with G-DPO at lambda 0 on ``fit_cities``' triples (the pipeline's
    settings otherwise; the adapter is kept in the home and reused) and write the
    embeddings of every city of ``cities`` that lacks them; returns those cities."""
    from common import ALIGNMENT_RUN_CONFIG

    from lgsid_pipeline.alignment.config import GdpoConfig
    from lgsid_pipeline.embeddings import incremental_embeddings
    from lgsid_pipeline.encoder import TextEncoder, item_prompts
    from lgsid_pipeline.stages.alignment import align_encoder
    from lgsid_pipeline.stages.context import StageContext

    ctx = StageContext.at(log=lambda line: print(line, flush=True))
    warehouse = ctx.warehouse
    todo = [c for c in cities if not warehouse.has_table("item_embeddings", c, NO_SIMILARITY_PART)]
    if not todo:
        return []
    encoder = TextEncoder.load()
    adapter = ctx.model_dir(NO_SIMILARITY_ADAPTER)
    if adapter.is_dir():
        encoder.load_adapter(adapter)
    else:
        settings = dict(ALIGNMENT_RUN_CONFIG["ops"]["aligned_encoder"]["config"])
        max_gc, max_dc = settings.pop("max_gc_triples"), settings.pop("max_dc_triples")
        config = GdpoConfig(**settings, lam=0.0)
        align_encoder(ctx, encoder, config, max_gc, max_dc, fit_cities)
        encoder.save_adapter(adapter)
    for city in todo:
        items = warehouse.read_table("items", city)
        result = incremental_embeddings(
            city,
            items,
            None,
            encoder.version,
            lambda frame: encoder.encode(item_prompts(frame), progress=True),
        )
        warehouse.write_table("item_embeddings", city, result.table, part=NO_SIMILARITY_PART)
    return todo


def ensure_ablation_codes(
    fit_cities: list[str], cities: list[str], align: bool = True
) -> list[str]:
    """Fit and write every missing ablation part for ``cities``; returns the parts written.
    Without ``align`` no encoder is trained: parts whose embeddings are missing are left
    out (``bench/ablations.py`` makes them)."""
    import pandas as pd

    from lgsid_pipeline.tokenizer import TOKENIZERS, TokenizerConfig
    from lgsid_pipeline.tokenizer.semantic_ids import aligned_embeddings, incremental_semantic_ids
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()
    everyone = list(dict.fromkeys([*fit_cities, *cities]))
    if align:
        ensure_no_similarity_embeddings(fit_cities, everyone)
    written = []
    for name, (kind, part) in ABLATION_CODES.items():
        if all(warehouse.has_table("semantic_ids", c, name) for c in cities):
            continue
        if not all(warehouse.has_table("item_embeddings", c, part) for c in everyone):
            continue  # align=False and the embeddings are not there yet
        inputs = {
            c: (warehouse.read_table("items", c), warehouse.read_arrow("item_embeddings", c, part))
            for c in dict.fromkeys([*fit_cities, *cities])
        }
        items = pd.concat([inputs[c][0] for c in fit_cities], ignore_index=True)
        vectors = np.concatenate([aligned_embeddings(*inputs[c])[0] for c in fit_cities])
        tokenizer = TOKENIZERS[kind](TokenizerConfig()).fit(items, vectors)
        for city in cities:
            result = incremental_semantic_ids(city, *inputs[city], tokenizer, None)
            warehouse.write_table("semantic_ids", city, result.table, part=name)
        written.append(name)
    return written


if __name__ == "__main__":
    from common import REAL_CITIES, ensure_semantic_ids, isolated_home

    isolated_home("lgsid-ablations-")
    from lgsid_pipeline.cities import CityRegistry
    from lgsid_pipeline.warehouse import Warehouse

    ensure_semantic_ids(list(REAL_CITIES))
    warehouse = Warehouse()  # every city with codes, the STHGCN one too once it has them
    coded = [
        c.slug for c in CityRegistry().all() if warehouse.has_table("semantic_ids", c.slug, "lgsid")
    ]
    print("wrote", ensure_ablation_codes(list(REAL_CITIES), coded) or "nothing")
