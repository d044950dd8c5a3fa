"""The RQ-KMeans baseline: residual k-means on the plain encoder's embeddings."""

from __future__ import annotations

import numpy as np

from lgsid_pipeline.catalog import TOKENIZER_EMBEDDING_PARTS
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.residual import (
    ResidualQuantizer,
    codebook_state,
    load_codebooks,
    permute_codebooks,
)


class RqKMeansTokenizer(Tokenizer):
    """Residual k-means on the plain encoder's embeddings (no geography, no training)."""

    kind = "rqkmeans"
    embedding_part = TOKENIZER_EMBEDDING_PARTS[kind]
    quantizer: ResidualQuantizer  # set by fit or load

    def _fit(self, items, x, previous, on_epoch, weights) -> None:
        self.quantizer = ResidualQuantizer(x.shape[1], self.codebook_sizes)
        books = (
            previous.quantizer.codebook_arrays()
            if isinstance(previous, RqKMeansTokenizer)
            else None
        )
        self.quantizer.init_kmeans(x, self.config.seed, books, weights)

    def _assign(self, items, x) -> np.ndarray:
        return self.quantizer.assign(x)

    def _decode(self, tokens) -> np.ndarray:
        return self.quantizer.decode(tokens)

    def codewords(self) -> list[np.ndarray]:
        return self.quantizer.codebook_arrays()

    def _permute(self, orders) -> None:
        permute_codebooks(self.quantizer, orders)

    def _state(self) -> dict[str, np.ndarray]:
        return codebook_state(self.quantizer)

    def _load_state(self, state, extra) -> None:
        self.quantizer = ResidualQuantizer(self.fitted_dim, self.codebook_sizes)
        load_codebooks(self.quantizer, state)
