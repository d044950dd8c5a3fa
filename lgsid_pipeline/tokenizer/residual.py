"""Residual vector quantisation shared by LGSID (levels >= 2), RQ-KMeans and RQ-VAE.

A ``ResidualQuantizer`` holds one codebook per level. Level l quantises the residual left by
levels < l with its nearest codeword (Euclidean). Codebooks start from k-means on the
residuals; ``train_codebooks`` then refines them with L1 reconstruction, the VQ codebook and
commitment terms, and the KL-to-uniform usage regulariser (METHOD section 4), and re-seeds
codewords that no item used in an epoch from random residuals so none stays dead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # fitting imports scikit-learn; assigning codes does not
    from sklearn.cluster import KMeans

_KMEANS_MINIBATCH_ABOVE = 20_000
_ASSIGN_BLOCK = 8192


def kmeans_fit(
    x: np.ndarray,
    k: int,
    seed: int,
    init: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
) -> KMeans:
    """K-means (mini-batch on large inputs); ``init`` warm-starts from given centres."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(x) < k:
        raise ValueError(f"cannot fit {k} codewords on {len(x)} items; use smaller codebooks")
    if init is not None:
        # Warm start: full Lloyd iterations from the given centres converge back to the same
        # fixed point on unchanged data (mini-batches and random reassignment would drift).
        model = KMeans(k, init=init, n_init=1, random_state=seed, max_iter=100)
    elif len(x) > _KMEANS_MINIBATCH_ABOVE:
        # Mini-batches find the clusters fast; a few Lloyd iterations then settle them on a
        # fixed point, so a warm-started refit on the same data has nothing left to move.
        rough = MiniBatchKMeans(
            k,
            init="k-means++",
            n_init=3,
            random_state=seed,
            batch_size=4096,
            max_iter=200,
            reassignment_ratio=0.05,
        )
        rough.fit(x.astype(np.float64), sample_weight=sample_weight)
        model = KMeans(k, init=rough.cluster_centers_, n_init=1, random_state=seed, max_iter=100)
    else:
        model = KMeans(k, init="k-means++", n_init=3, random_state=seed, max_iter=300)
    return model.fit(x.astype(np.float64), sample_weight=sample_weight)


def nearest(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest codeword per row and the squared distances to all codewords."""
    d2 = (
        x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.T + codebook.pow(2).sum(1)[None, :]
    ).clamp_min(0)
    return d2.argmin(1), d2


@dataclass
class QuantizeOutput:
    """Tokens, the summed quantised vector and the loss terms of one forward pass."""

    tokens: torch.Tensor  # (batch, levels)
    quantized: torch.Tensor  # (batch, dim): sum of the chosen codewords
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    usage_kl: torch.Tensor  # KL(mean soft assignment || uniform), summed over regularised levels


class ResidualQuantizer(nn.Module):
    """One learnable codebook per level over residuals of a ``dim``-dimensional input."""

    def __init__(self, dim: int, sizes: list[int]) -> None:
        super().__init__()
        self.dim = dim
        self.sizes = list(sizes)
        self.codebooks = nn.ParameterList([nn.Parameter(torch.zeros(k, dim)) for k in self.sizes])

    def init_kmeans(
        self,
        x: np.ndarray,
        seed: int,
        previous: list[np.ndarray] | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """Initialise each level by k-means on its residuals (or from ``previous`` codebooks
        as the starting centres); returns the final residual."""
        residual = x.astype(np.float32).copy()
        for level, k in enumerate(self.sizes):
            init = previous[level] if previous is not None else None
            model = kmeans_fit(residual, k, seed + level, init, weights)
            centres = model.cluster_centers_.astype(np.float32)
            with torch.no_grad():
                self.codebooks[level].copy_(torch.from_numpy(centres))
            residual -= centres[model.predict(residual.astype(np.float64))]
        return residual

    def forward(
        self,
        x: torch.Tensor,
        straight_through: bool = False,
        regularise_from: int | None = None,
        temperature: float = 1.0,
    ) -> QuantizeOutput:
        """Quantise ``x`` level by level.

        ``straight_through`` passes the gradient of the output to ``x`` (RQ-VAE, whose encoder
        produces ``x``); without it the output's gradient reaches the codewords directly, which
        is how codebooks over fixed inputs learn from the reconstruction loss.
        ``regularise_from`` is the first level (0-based) that gets the usage KL term.
        """
        residual = x
        quantized = torch.zeros_like(x)
        tokens = []
        codebook_loss = x.new_zeros(())
        commitment_loss = x.new_zeros(())
        usage_kl = x.new_zeros(())
        for level, codebook in enumerate(self.codebooks):
            index, d2 = nearest(residual, codebook)
            chosen = codebook[index]
            codebook_loss = codebook_loss + (residual.detach() - chosen).pow(2).sum(1).mean()
            commitment_loss = commitment_loss + (residual - chosen.detach()).pow(2).sum(1).mean()
            if regularise_from is not None and level >= regularise_from:
                soft = torch.softmax(-d2 / temperature, dim=1).mean(0)
                usage_kl = usage_kl + torch.sum(soft * torch.log(soft * len(codebook) + 1e-12))
            step = residual + (chosen - residual).detach() if straight_through else chosen
            quantized = quantized + step
            residual = residual - step
            tokens.append(index)
        return QuantizeOutput(
            torch.stack(tokens, 1), quantized, codebook_loss, commitment_loss, usage_kl
        )

    @torch.no_grad()
    def assign(self, x: np.ndarray) -> np.ndarray:
        """Tokens (n, levels) of fixed inputs, in blocks."""
        out = np.zeros((len(x), len(self.sizes)), dtype=np.int64)
        for start in range(0, len(x), _ASSIGN_BLOCK):
            block = torch.from_numpy(
                np.ascontiguousarray(x[start : start + _ASSIGN_BLOCK], dtype=np.float32)
            )
            out[start : start + len(block)] = self.forward(block).tokens.numpy()
        return out

    @torch.no_grad()
    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Sum of the codewords named by ``tokens`` (n, levels)."""
        tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
        out = torch.zeros(len(tokens), self.dim)
        for level, codebook in enumerate(self.codebooks):
            out += codebook[tokens[:, level]]
        return out.numpy()

    def codebook_arrays(self) -> list[np.ndarray]:
        return [c.detach().numpy().copy() for c in self.codebooks]

    @torch.no_grad()
    def reseed_dead(
        self, used: list[torch.Tensor], residuals: list[torch.Tensor], generator: torch.Generator
    ) -> int:
        """Move codewords unused this epoch onto random residuals of their level."""
        moved = 0
        for level, codebook in enumerate(self.codebooks):
            dead = torch.nonzero(used[level] == 0).flatten()
            pool = residuals[level]
            if len(dead) and len(pool):
                pick = torch.randint(len(pool), (len(dead),), generator=generator)
                codebook[dead] = pool[pick]
                moved += len(dead)
        return moved

    @torch.no_grad()
    def level_residuals(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input of every level for a batch (what each codebook quantises)."""
        out = []
        residual = x
        for codebook in self.codebooks:
            out.append(residual)
            index, _ = nearest(residual, codebook)
            residual = residual - codebook[index]
        return out


def batches(
    n: int, batch_size: int, generator: torch.Generator, weights: torch.Tensor | None = None
) -> Iterator[torch.Tensor]:
    """Shuffled index batches over ``n`` rows (drawn with replacement by ``weights``)."""
    order = (
        torch.randperm(n, generator=generator)
        if weights is None
        else torch.multinomial(weights, n, replacement=True, generator=generator)
    )
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


LossFn = Callable[[torch.Tensor], tuple[torch.Tensor, QuantizeOutput, dict[str, float]]]


def train_codebooks(
    parameters: list[nn.Parameter],
    quantizer: ResidualQuantizer,
    data: torch.Tensor,
    loss_fn: LossFn,
    quantizer_input: Callable[[torch.Tensor], torch.Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    weights: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Adam over ``parameters`` for ``epochs`` passes; dead codewords re-seeded each epoch.

    ``loss_fn(batch)`` returns the loss, the quantiser output and figures to log;
    ``quantizer_input(batch)`` is what the quantiser sees (to re-seed from real residuals);
    ``weights`` (per row) make batches draw rows in proportion to them.
    """
    generator = torch.Generator().manual_seed(seed)
    draw = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    optimiser = torch.optim.Adam(parameters, lr=lr)
    steps = epochs * max(1, -(-len(data) // batch_size))
    # Cosine decay to zero: the last steps barely move the codebooks, so two fits on the same
    # data end near the same point (what keeps a warm-started retrain's codes stable).
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        used = [torch.zeros(k, dtype=torch.long) for k in quantizer.sizes]
        sums: dict[str, float] = {}
        seen = 0
        for index in batches(len(data), batch_size, generator, draw):
            loss, output, figures = loss_fn(data[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            for level in range(len(used)):
                used[level] += torch.bincount(
                    output.tokens[:, level], minlength=quantizer.sizes[level]
                )
            for key, value in figures.items():
                sums[key] = sums.get(key, 0.0) + value * len(index)
            seen += len(index)
        sample = data[torch.randperm(len(data), generator=generator)[:4096]]
        with torch.no_grad():
            residuals = quantizer.level_residuals(quantizer_input(sample))
        reseeded = quantizer.reseed_dead(used, residuals, generator) if epoch < epochs else 0
        row = {
            "epoch": float(epoch),
            **{k: v / seen for k, v in sums.items()},
            "min_utilisation": float(min((u > 0).float().mean() for u in used)),
            "reseeded": float(reseeded),
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        if on_epoch:
            on_epoch(row)
    return history


def codebook_state(quantizer: ResidualQuantizer) -> dict:
    """The quantizer's codebooks keyed ``codebook_<level>`` (the saved state's layout)."""
    return {f"codebook_{i}": c for i, c in enumerate(quantizer.codebook_arrays())}


def load_codebooks(
    quantizer: ResidualQuantizer, state: dict, prefix: str | None = "codebook"
) -> None:
    """Copy codebooks from ``state`` (keyed ``codebook_<level>``, or by level without prefix)."""
    with torch.no_grad():
        for i, codebook in enumerate(quantizer.codebooks):
            key = f"{prefix}_{i}" if prefix else i
            codebook.copy_(torch.from_numpy(np.asarray(state[key], dtype=np.float32)))


def permute_codebooks(quantizer: ResidualQuantizer, orders: list[np.ndarray]) -> None:
    """Reorder each level's codewords (``orders[level][new] = old``)."""
    with torch.no_grad():
        for codebook, order in zip(quantizer.codebooks, orders, strict=True):
            codebook.copy_(codebook[torch.from_numpy(order)].clone())
