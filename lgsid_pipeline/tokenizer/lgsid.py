"""LGSID's hierarchical geographic tokenizer: a geographic primary level, residual levels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lgsid_pipeline.catalog import TOKENIZER_EMBEDDING_PARTS
from lgsid_pipeline.tokenizer.base import Tokenizer, match_codebooks
from lgsid_pipeline.tokenizer.features import PrimaryFeatureSpec, fit_feature_spec, primary_features
from lgsid_pipeline.tokenizer.residual import (
    ResidualQuantizer,
    codebook_state,
    kmeans_fit,
    load_codebooks,
    nearest,
    permute_codebooks,
    train_codebooks,
)


def _nearest_rows(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    out = np.zeros(len(x), dtype=np.int64)
    centres_t = torch.from_numpy(centres.astype(np.float32))
    for start in range(0, len(x), 8192):
        block = torch.from_numpy(np.ascontiguousarray(x[start : start + 8192], dtype=np.float32))
        out[start : start + len(block)] = nearest(block, centres_t)[0].numpy()
    return out


class LgsidTokenizer(Tokenizer):
    """Level 1: MiniBatchKMeans on the weighted primary features, its codeword the mean
    aligned embedding of the cluster; levels >= 2: learnable residual codebooks."""

    kind = "lgsid"
    embedding_part = TOKENIZER_EMBEDDING_PARTS[kind]
    spec: PrimaryFeatureSpec  # set by fit or load
    quantizer: ResidualQuantizer

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.primary_centres = np.zeros((0, 0), dtype=np.float32)
        self.primary_codewords = np.zeros((0, 0), dtype=np.float32)

    def _fit(self, items, x, previous, on_epoch, weights) -> None:
        cfg = self.config
        self.spec = fit_feature_spec(items, cfg)
        features = primary_features(items, self.spec)
        init = None
        if isinstance(previous, LgsidTokenizer):
            init = self.spec.carry_over(previous.primary_centres, previous.spec)
        self.primary_centres = kmeans_fit(
            features, self.codebook_sizes[0], cfg.seed, init, weights
        ).cluster_centers_.astype(np.float32)
        primary = _nearest_rows(features, self.primary_centres)
        self.primary_codewords = self._cluster_means(x, primary)
        residual = x - self.primary_codewords[primary]
        self.quantizer = ResidualQuantizer(x.shape[1], self.codebook_sizes[1:])
        torch.manual_seed(cfg.seed)
        previous_books = (
            previous.quantizer.codebook_arrays()
            if isinstance(previous, LgsidTokenizer) and previous.quantizer
            else None
        )
        if previous_books is not None:
            # Start exactly where the previous fit ended (k-means would pull its trained
            # codewords back to the k-means optimum and reshuffle codes).
            load_codebooks(self.quantizer, dict(enumerate(previous_books)), prefix=None)
        else:
            self.quantizer.init_kmeans(residual, cfg.seed + 1, weights=weights)
        if not self.quantizer.sizes:
            return
        quantizer = self.quantizer

        def loss_fn(batch: torch.Tensor):
            out = quantizer(batch, regularise_from=0, temperature=cfg.temperature)
            recon = (batch - out.quantized).abs().sum(1).mean()
            loss = (
                recon
                + out.codebook_loss
                + cfg.commitment * out.commitment_loss
                + cfg.entropy_weight * out.usage_kl
            )
            return (
                loss,
                out,
                {"loss": loss.item(), "recon_l1": recon.item(), "usage_kl": out.usage_kl.item()},
            )

        self.history = train_codebooks(
            list(quantizer.parameters()),
            quantizer,
            torch.from_numpy(residual),
            loss_fn,
            lambda b: b,
            self.epochs(previous_books is not None),
            cfg.batch_size,
            self.learning_rate(previous_books is not None),
            cfg.seed,
            on_epoch,
            weights,
        )

    def _cluster_means(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Mean embedding per cluster (the overall mean for a cluster left empty)."""
        k = self.codebook_sizes[0]
        sums = np.zeros((k, x.shape[1]), dtype=np.float64)
        np.add.at(sums, labels, x)
        counts = np.bincount(labels, minlength=k)[:, None]
        means = np.where(counts > 0, sums / np.maximum(counts, 1), x.mean(0))
        return means.astype(np.float32)

    def primary_tokens(self, items: pd.DataFrame) -> np.ndarray:
        """Level-1 tokens from the items' primary features alone."""
        self._require_fitted()
        return _nearest_rows(primary_features(items, self.spec), self.primary_centres)

    def _assign(self, items, x) -> np.ndarray:
        primary = self.primary_tokens(items)
        rest = self.quantizer.assign(x - self.primary_codewords[primary])
        return np.concatenate([primary[:, None], rest], axis=1)

    def _decode(self, tokens) -> np.ndarray:
        return self.primary_codewords[tokens[:, 0]] + self.quantizer.decode(tokens[:, 1:])

    def codewords(self) -> list[np.ndarray]:
        return [self.primary_codewords, *self.quantizer.codebook_arrays()]

    def match_to(self, previous: Tokenizer) -> None:
        # Primary clusters are matched on their feature-space centres when both fits share
        # the feature columns (geography decides the level-1 token), else on embeddings.
        if isinstance(previous, LgsidTokenizer) and len(previous.primary_centres) == len(
            self.primary_centres
        ):
            first = match_codebooks(
                self.primary_centres, self.spec.carry_over(previous.primary_centres, previous.spec)
            )
            self._permute([first] + [np.arange(k) for k in self.codebook_sizes[1:]])
            rest = [
                match_codebooks(n, o)
                for n, o in zip(
                    self.quantizer.codebook_arrays(),
                    previous.quantizer.codebook_arrays(),
                    strict=True,
                )
            ]
            self._permute([np.arange(self.codebook_sizes[0])] + rest)
        else:
            super().match_to(previous)

    def _permute(self, orders) -> None:
        self.primary_centres = self.primary_centres[orders[0]]
        self.primary_codewords = self.primary_codewords[orders[0]]
        permute_codebooks(self.quantizer, orders[1:])

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "primary_centres": self.primary_centres,
            "primary_codewords": self.primary_codewords,
            **codebook_state(self.quantizer),
        }

    def _load_state(self, state, extra) -> None:
        self.spec = PrimaryFeatureSpec.from_dict(extra["spec"])
        self.primary_centres = state["primary_centres"]
        self.primary_codewords = state["primary_codewords"]
        self.quantizer = ResidualQuantizer(self.fitted_dim, self.codebook_sizes[1:])
        load_codebooks(self.quantizer, state)

    def _extra(self) -> dict:
        return {"spec": self.spec.to_dict()}
