"""LGSID's hierarchical geographic tokenizer and the RQ-KMeans and RQ-VAE baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from lgsid_pipeline.catalog import TOKENIZER_EMBEDDING_PARTS
from lgsid_pipeline.tokenizer.base import EpochCallback, Tokenizer, match_codebooks
from lgsid_pipeline.tokenizer.features import (
    PrimaryFeatureSpec,
    fit_feature_spec,
    primary_features,
)
from lgsid_pipeline.tokenizer.residual import (
    ResidualQuantizer,
    batches,
    kmeans_fit,
    nearest,
    train_codebooks,
)


def _codebook_state(quantizer: ResidualQuantizer) -> dict:
    return {f"codebook_{i}": c for i, c in enumerate(quantizer.codebook_arrays())}


def _load_codebooks(
    quantizer: ResidualQuantizer, state: dict, prefix: str | None = "codebook"
) -> None:
    """Copy codebooks from ``state`` (keyed ``codebook_<level>``, or by level without prefix)."""
    with torch.no_grad():
        for i, codebook in enumerate(quantizer.codebooks):
            key = f"{prefix}_{i}" if prefix else i
            codebook.copy_(torch.from_numpy(np.asarray(state[key], dtype=np.float32)))


def _permute_codebooks(quantizer: ResidualQuantizer, orders: list[np.ndarray]) -> None:
    with torch.no_grad():
        for codebook, order in zip(quantizer.codebooks, orders, strict=True):
            codebook.copy_(codebook[torch.from_numpy(order)].clone())


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

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.spec: PrimaryFeatureSpec | None = None
        self.primary_centres = np.zeros((0, 0), dtype=np.float32)
        self.primary_codewords = np.zeros((0, 0), dtype=np.float32)
        self.quantizer: ResidualQuantizer | None = None

    def _fit(self, items, x, previous, on_epoch, weights) -> None:
        cfg = self.config
        self.spec = fit_feature_spec(items, cfg)
        features = primary_features(items, self.spec)
        init = None
        if isinstance(previous, LgsidTokenizer) and previous.spec is not None:
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
            _load_codebooks(self.quantizer, dict(enumerate(previous_books)), prefix=None)
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
        _permute_codebooks(self.quantizer, orders[1:])

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "primary_centres": self.primary_centres,
            "primary_codewords": self.primary_codewords,
            **_codebook_state(self.quantizer),
        }

    def _load_state(self, state, extra) -> None:
        self.spec = PrimaryFeatureSpec.from_dict(extra["spec"])
        self.primary_centres = state["primary_centres"]
        self.primary_codewords = state["primary_codewords"]
        self.quantizer = ResidualQuantizer(self.dim, self.codebook_sizes[1:])
        _load_codebooks(self.quantizer, state)

    def _extra(self) -> dict:
        return {"spec": self.spec.to_dict()}


class RqKMeansTokenizer(Tokenizer):
    """Residual k-means on the plain encoder's embeddings (no geography, no training)."""

    kind = "rqkmeans"
    embedding_part = TOKENIZER_EMBEDDING_PARTS[kind]

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.quantizer: ResidualQuantizer | None = None

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
        _permute_codebooks(self.quantizer, orders)

    def _state(self) -> dict[str, np.ndarray]:
        return _codebook_state(self.quantizer)

    def _load_state(self, state, extra) -> None:
        self.quantizer = ResidualQuantizer(self.dim, self.codebook_sizes)
        _load_codebooks(self.quantizer, state)


class RqVae(nn.Module):
    """TIGER's RQ-VAE: MLP encoder, residual quantiser on the latent, MLP decoder."""

    def __init__(self, dim: int, hidden: int, latent: int, sizes: list[int]) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.quantizer = ResidualQuantizer(latent, sizes)


class RqVaeTokenizer(Tokenizer):
    """RQ-VAE on the plain encoder's embeddings: MSE reconstruction through the decoder,
    codebook and commitment terms, straight-through gradients to the encoder."""

    kind = "rqvae"
    embedding_part = TOKENIZER_EMBEDDING_PARTS[kind]

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.model: RqVae | None = None

    def _fit(self, items, x, previous, on_epoch: EpochCallback | None, weights) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.model = RqVae(x.shape[1], cfg.hidden_dim, cfg.latent_dim, self.codebook_sizes)
        model = self.model
        data = torch.from_numpy(x)
        warm = isinstance(previous, RqVaeTokenizer) and self._same_shape(previous)
        if warm:
            model.load_state_dict(previous.model.state_dict())
        else:
            # Codebooks initialised on a random encoder's latents collapse as soon as the
            # encoder moves: train the plain autoencoder first, then run k-means on its latents.
            self._pretrain_autoencoder(data)
            with torch.no_grad():
                latent = model.encoder(data).numpy()
            model.quantizer.init_kmeans(latent, cfg.seed, weights=weights)

        def loss_fn(batch: torch.Tensor):
            out = model.quantizer(model.encoder(batch), straight_through=True)
            recon = (model.decoder(out.quantized) - batch).pow(2).sum(1).mean()
            loss = recon + out.codebook_loss + cfg.commitment * out.commitment_loss
            return loss, out, {"loss": loss.item(), "recon_mse": recon.item()}

        model.train()
        self.history = train_codebooks(
            list(model.parameters()),
            model.quantizer,
            data,
            loss_fn,
            model.encoder,
            self.epochs(warm),
            cfg.batch_size,
            self.learning_rate(warm),
            cfg.seed,
            on_epoch,
            weights,
        )
        model.eval()

    def _pretrain_autoencoder(self, data: torch.Tensor) -> None:
        """A third of the epochs of plain MSE autoencoding (no quantiser)."""
        cfg = self.config
        model = self.model
        params = [*model.encoder.parameters(), *model.decoder.parameters()]
        optimiser = torch.optim.Adam(params, lr=cfg.lr)
        generator = torch.Generator().manual_seed(cfg.seed)
        for _ in range(max(1, cfg.epochs // 3)):
            for index in batches(len(data), cfg.batch_size, generator):
                batch = data[index]
                loss = (model.decoder(model.encoder(batch)) - batch).pow(2).sum(1).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()

    def _same_shape(self, previous: RqVaeTokenizer) -> bool:
        return (
            previous.config.hidden_dim == self.config.hidden_dim
            and previous.config.latent_dim == self.config.latent_dim
        )

    def _latent(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model.encoder(torch.from_numpy(x)).numpy()

    def _assign(self, items, x) -> np.ndarray:
        return self.model.quantizer.assign(self._latent(x))

    def _decode(self, tokens) -> np.ndarray:
        with torch.no_grad():
            latent = torch.from_numpy(self.model.quantizer.decode(tokens))
            return self.model.decoder(latent).numpy()

    def codewords(self) -> list[np.ndarray]:
        return self.model.quantizer.codebook_arrays()

    def _permute(self, orders) -> None:
        _permute_codebooks(self.model.quantizer, orders)

    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}

    def _load_state(self, state, extra) -> None:
        cfg = self.config
        self.model = RqVae(self.dim, cfg.hidden_dim, cfg.latent_dim, self.codebook_sizes)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        self.model.eval()


TOKENIZERS: dict[str, type[Tokenizer]] = {
    cls.kind: cls for cls in (LgsidTokenizer, RqKMeansTokenizer, RqVaeTokenizer)
}
