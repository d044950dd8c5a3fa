"""Decoding the generative recommenders: the constrained beam search over the code trie and
the log-probability of candidate items.

Both work on any :class:`~lgsid_pipeline.recommenders.generative.GenerativeModel` through its
decoding hooks. :func:`constrained_beam_search` walks the
:class:`~lgsid_pipeline.recommenders.trie.PrefixTrie` level by level, so every generated code
is a real item's and every list is free of duplicates; :func:`score_items` gives the summed
log-probability of given items' codes, the quantity the beam search ranks by.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lgsid_pipeline.recommenders.trie import CodeVocabulary, PrefixTrie

if TYPE_CHECKING:  # the models import this module (their top-K is a beam search)
    from lgsid_pipeline.recommenders.generative import GenerativeModel


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _as_tokens(batch: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    data = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.asarray(batch))
    return data.to(device=device, dtype=torch.long)


@torch.inference_mode()
def constrained_beam_search(
    model: GenerativeModel,
    batch: torch.Tensor | np.ndarray,
    trie: PrefixTrie,
    beam_size: int,
    top_k: int,
    use_cache: bool = True,
    first_bias: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` items (B, top_k) and their scores (summed log-probabilities), best
    first, for history tokens ``batch`` (B, max_history * depth).

    A beam search over the ``depth`` code positions; at each step the logits are limited to
    the trie's children of each beam's prefix, so every result is a real item's full code,
    and distinct beams are distinct items. With ``use_cache`` the model keeps a key/value
    cache and each step feeds only the new token (same results as recomputing the prefix).
    ``first_bias`` (B, sizes[0]) is added to the first level's log-probabilities (a
    decoding prior). Needs ``top_k <= beam_size`` and ``top_k`` at most the number of items.
    Runs in eval mode (restores the model's mode).
    """
    if not 1 <= top_k <= beam_size:
        raise ValueError(f"need 1 <= top_k <= beam_size, got top_k={top_k}, beam_size={beam_size}")
    if top_k > trie.n_items:
        raise ValueError(f"top_k {top_k} exceeds the {trie.n_items} items of the catalogue")
    vocab = trie.vocabulary
    was_training = model.training
    model.eval()
    device = _device(model)
    history = _as_tokens(batch, device)
    n = len(history)
    if first_bias is not None and tuple(first_bias.shape) != (n, int(vocab.sizes[0])):
        raise ValueError(
            f"first_bias must be ({n}, {int(vocab.sizes[0])}), got {tuple(first_bias.shape)}"
        )
    if use_cache:
        state, logits = model.start(history)
    else:
        reference = model.prepare(history)
    nodes = torch.zeros(n, 1, dtype=torch.long, device=device)  # trie node of each beam
    scores = torch.zeros(n, 1, device=device)
    prefix = torch.zeros(n, 1, 0, dtype=torch.long, device=device)
    for depth in range(vocab.depth):
        width = nodes.shape[1]
        if not use_cache:
            beams = {k: v.repeat_interleave(width, dim=0) for k, v in reference.items()}
            logits = model.next_logits(beams, prefix.reshape(n * width, depth))
        offset, size = int(vocab.offsets[depth]), int(vocab.sizes[depth])
        logp = F.log_softmax(logits.float(), dim=-1)[:, offset : offset + size]
        logp = logp.reshape(n, width, size)
        if depth == 0 and first_bias is not None:
            logp = logp + first_bias.to(device=device, dtype=logp.dtype)[:, None, :]
        children = trie.children(depth, nodes)  # (n, width, size)
        alive = (children >= 0) & torch.isfinite(scores)[..., None]
        candidates = torch.where(
            alive, scores[..., None] + logp, torch.tensor(-math.inf, device=device)
        )
        scores, flat = candidates.reshape(n, -1).topk(min(beam_size, width * size), dim=1)
        parent, code = flat // size, flat % size
        nodes = children.reshape(n, -1).gather(1, flat).masked_fill(~torch.isfinite(scores), -1)
        prefix = torch.cat(
            [prefix.gather(1, parent[..., None].expand(-1, -1, depth)), (code + offset)[..., None]],
            dim=2,
        )
        if use_cache and depth + 1 < vocab.depth:
            rows = (torch.arange(n, device=device)[:, None] * width + parent).reshape(-1)
            model.select(state, rows)
            logits = model.extend(state, prefix[:, :, -1].reshape(-1, 1))[:, -1]
    model.train(was_training)
    # every prefix continues to >= 1 item, so at least min(beam_size, n_items) beams survive
    return nodes[:, :top_k].cpu().numpy(), scores[:, :top_k].cpu().numpy()


@torch.inference_mode()
def score_items(
    model: GenerativeModel,
    batch: torch.Tensor | np.ndarray,
    vocabulary: CodeVocabulary,
    candidates: np.ndarray,
) -> np.ndarray:
    """Log-probability (B, C) of each candidate item's whole code given history tokens
    ``batch`` (B, max_history * depth), the same quantity the beam search sums; -inf where a
    candidate is -1 (padding). Teacher-forced with the key/value cache."""
    cand = np.asarray(candidates, dtype=np.int64)
    if cand.ndim != 2 or len(cand) != len(batch):
        raise ValueError(f"candidates must be ({len(batch)}, C), got {cand.shape}")
    n, width = cand.shape
    if width == 0:
        return np.zeros((n, 0), dtype=np.float32)
    was_training = model.training
    model.eval()
    device = _device(model)
    state, first = model.start(_as_tokens(batch, device))
    targets = torch.from_numpy(vocabulary.item_tokens(np.clip(cand, 0, None))).to(device)
    targets = targets.reshape(n * width, vocabulary.depth)
    rows = torch.arange(n, device=device).repeat_interleave(width)
    logits = first.index_select(0, rows)[:, None]
    if vocabulary.depth > 1:
        model.select(state, rows)
        logits = torch.cat([logits, model.extend(state, targets[:, :-1])], dim=1)
    logp = F.log_softmax(logits.float(), dim=-1).gather(2, targets[..., None])[..., 0]
    model.train(was_training)
    out = logp.sum(dim=1).reshape(n, width).cpu().numpy()
    return np.where(cand >= 0, out, -np.inf)
