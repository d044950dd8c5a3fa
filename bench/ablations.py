"""Codes for the ablations of the paper's Tables 3 to 5, written as extra ``semantic_ids``
parts beside the pipeline's own (``lgsid``, ``rqkmeans``, ``rqvae``):

- ``lgsid_plain_encoder``: the LGSID tokenizer on the plain encoder's embeddings (no G-DPO);
- ``lgsid_no_geo_level``: LGSID without its geographic primary level, i.e. residual
  k-means levels only on the aligned embeddings.

Each tokenizer is fitted once on the real cities together, with the pipeline's tokenizer
settings, as the pipeline fits its own; other cities get codes from it, frozen. (G-DPO with
lambda 0 needs a retrained encoder and re-encoded cities: not here.)
"""

from __future__ import annotations

ABLATION_CODES = {"lgsid_plain_encoder": ("lgsid", "reference"),
                  "lgsid_no_geo_level": ("rqkmeans", "aligned")}


def ensure_ablation_codes(fit_cities: list[str], cities: list[str]) -> list[str]:
    """Fit and write every missing ablation part for ``cities``; returns the parts written."""
    import numpy as np
    import pandas as pd

    from lgsid_pipeline.tokenizer import TOKENIZERS, TokenizerConfig
    from lgsid_pipeline.tokenizer.codes import aligned_embeddings, incremental_semantic_ids
    from lgsid_pipeline.warehouse import Warehouse

    warehouse = Warehouse()
    written = []
    for name, (kind, part) in ABLATION_CODES.items():
        if all(warehouse.has_table("semantic_ids", c, name) for c in cities):
            continue
        inputs = {c: (warehouse.read_table("items", c),
                      warehouse.read_arrow("item_embeddings", c, part))
                  for c in dict.fromkeys([*fit_cities, *cities])}
        items = pd.concat([inputs[c][0] for c in fit_cities], ignore_index=True)
        vectors = np.concatenate([aligned_embeddings(*inputs[c])[0] for c in fit_cities])
        tokenizer = TOKENIZERS[kind](TokenizerConfig()).fit(items, vectors)
        for city in cities:
            result = incremental_semantic_ids(city, *inputs[city], tokenizer, None)
            warehouse.write_table("semantic_ids", city, result.table, part=name)
        written.append(name)
    return written
