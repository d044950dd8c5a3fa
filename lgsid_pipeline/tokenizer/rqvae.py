"""The RQ-VAE baseline (TIGER's tokenizer) on the plain encoder's embeddings."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lgsid_pipeline.catalog import TOKENIZER_EMBEDDING_PARTS
from lgsid_pipeline.tokenizer.base import EpochCallback, Tokenizer
from lgsid_pipeline.tokenizer.residual import (
    ResidualQuantizer,
    batches,
    permute_codebooks,
    train_codebooks,
)


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
    model: RqVae  # set by fit or load

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
        permute_codebooks(self.model.quantizer, orders)

    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}

    def _load_state(self, state, extra) -> None:
        cfg = self.config
        self.model = RqVae(self.fitted_dim, cfg.hidden_dim, cfg.latent_dim, self.codebook_sizes)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        self.model.eval()
