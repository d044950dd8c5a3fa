"""Semantic-ID codes as generative-model tokens, and the prefix trie of valid codes.

Every item has a code of ``depth = L + 1`` tokens (L semantic-ID levels plus the final
de-duplication token), unique per item. :class:`CodeVocabulary` gives each level its own range
of token ids after a few special tokens, so one flat vocabulary serves every level.
:class:`PrefixTrie` holds every valid code as per-level child tables, so a beam search can
mask each step to the tokens that continue some real item's code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PAD, BOS, EOS, SEP = 0, 1, 2, 3  # BOS doubles as the decoder-start token
N_SPECIAL = 4


class CodeVocabulary:
    """Item codes (n_items, depth) <-> flat token ids: level ``l`` code ``c`` is token
    ``offsets[l] + c``; ids below ``N_SPECIAL`` are PAD, BOS, EOS and SEP."""

    def __init__(self, codes: np.ndarray) -> None:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
            raise ValueError(f"codes must be a non-empty (n_items, depth) array, got {codes.shape}")
        if codes.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        if codes.min() < 0:
            raise ValueError("codes must be >= 0 (every item needs a full code)")
        self.codes = codes.astype(np.int64)
        self.sizes = self.codes.max(axis=0) + 1
        if float(np.prod(self.sizes.astype(np.float64))) >= 2.0**62:
            raise ValueError(f"code space {self.sizes.tolist()} is too large to index")
        self.radix = np.r_[np.cumprod(self.sizes[::-1])[::-1][1:], 1].astype(np.int64)
        keys = self.codes @ self.radix
        self._order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[self._order]
        if (np.diff(self._sorted_keys) == 0).any():
            raise ValueError("codes must be unique per item (add a de-duplication level)")
        self.offsets = N_SPECIAL + np.r_[0, np.cumsum(self.sizes)[:-1]].astype(np.int64)
        self.vocab_size = int(N_SPECIAL + self.sizes.sum())

    @property
    def n_items(self) -> int:
        return len(self.codes)

    @property
    def depth(self) -> int:
        """Tokens per item (L levels + the de-duplication token)."""
        return self.codes.shape[1]

    def item_tokens(self, item_idx: np.ndarray) -> np.ndarray:
        """Tokens (..., depth) of items; a negative index (padding) gives PAD tokens."""
        idx = np.asarray(item_idx, dtype=np.int64)
        if idx.size and idx.max() >= self.n_items:
            raise ValueError(f"item index {idx.max()} out of range for {self.n_items} items")
        tokens = self.codes[np.clip(idx, 0, None)] + self.offsets
        return np.where((idx < 0)[..., None], PAD, tokens)

    def history_tokens(self, histories: np.ndarray) -> np.ndarray:
        """Flattened tokens (S, N * depth) of left-padded histories (S, N) (-1 = padding)."""
        hist = np.asarray(histories, dtype=np.int64)
        if hist.ndim != 2:
            raise ValueError(f"histories must be (S, N), got shape {hist.shape}")
        return self.item_tokens(hist).reshape(len(hist), -1)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Item indices of token rows (..., depth); -1 where the tokens name no item."""
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.shape[-1:] != (self.depth,):
            raise ValueError(f"tokens must end in a dimension of {self.depth}, got {ids.shape}")
        codes = ids - self.offsets
        valid = ((codes >= 0) & (codes < self.sizes)).all(axis=-1)
        keys = np.where(valid, np.clip(codes, 0, None) @ self.radix, -1)
        pos = np.clip(np.searchsorted(self._sorted_keys, keys), 0, self.n_items - 1)
        found = valid & (self._sorted_keys[pos] == keys)
        return np.where(found, self._order[pos], -1)


class PrefixTrie:
    """Every valid code as a trie: ``tables[d][node, c]`` is the child of ``node`` (a prefix
    of length d, root = 0) under level-d code ``c``, or -1; at the last level the entry is
    the item index. Memory is sum over levels of (prefixes of length d) x ``sizes[d]``."""

    def __init__(self, vocabulary: CodeVocabulary) -> None:
        self.vocabulary = vocabulary
        codes, sizes = vocabulary.codes, vocabulary.sizes
        parent = np.zeros(vocabulary.n_items, dtype=np.int64)
        n_nodes = 1
        self.tables: list[np.ndarray] = []
        for d in range(vocabulary.depth):
            table = np.full((n_nodes, sizes[d]), -1, dtype=np.int64)
            if d == vocabulary.depth - 1:
                table[parent, codes[:, d]] = np.arange(vocabulary.n_items)
            else:
                uniq, child = np.unique(parent * sizes[d] + codes[:, d], return_inverse=True)
                table[uniq // sizes[d], uniq % sizes[d]] = np.arange(len(uniq))
                parent, n_nodes = child.reshape(-1), len(uniq)
            self.tables.append(table)
        self._torch: dict[torch.device, list[torch.Tensor]] = {}

    @property
    def n_items(self) -> int:
        return self.vocabulary.n_items

    def _walk(self, prefixes: np.ndarray) -> np.ndarray:
        """Node of each token prefix row (B, t), -1 where the prefix is invalid."""
        nodes = np.zeros(len(prefixes), dtype=np.int64)
        for d in range(prefixes.shape[1]):
            code = prefixes[:, d] - self.vocabulary.offsets[d]
            ok = (nodes >= 0) & (code >= 0) & (code < self.vocabulary.sizes[d])
            code = np.clip(code, 0, self.vocabulary.sizes[d] - 1)
            child = self.tables[d][np.clip(nodes, 0, None), code]
            nodes = np.where(ok, child, -1)
        return nodes

    def _check_length(self, length: int) -> None:
        if not 0 <= length < self.vocabulary.depth:
            raise ValueError(
                f"a prefix must have 0 to {self.vocabulary.depth - 1} tokens, got {length}"
            )

    def allowed(self, prefix: Sequence[int]) -> np.ndarray:
        """Token ids that may follow ``prefix`` (tokens); empty when the prefix is invalid."""
        tokens = np.asarray(prefix, dtype=np.int64).reshape(1, -1)
        self._check_length(tokens.shape[1])
        return self.allowed_mask(tokens)[0].nonzero()[0]

    def allowed_mask(self, prefixes: np.ndarray) -> np.ndarray:
        """(B, vocab) bool: which tokens may follow each token prefix of (B, t)."""
        tokens = np.asarray(prefixes, dtype=np.int64)
        if tokens.ndim != 2:
            raise ValueError(f"prefixes must be (B, t), got shape {tokens.shape}")
        depth = tokens.shape[1]
        self._check_length(depth)
        nodes = self._walk(tokens)
        mask = np.zeros((len(tokens), self.vocabulary.vocab_size), dtype=bool)
        off, size = self.vocabulary.offsets[depth], self.vocabulary.sizes[depth]
        children = self.tables[depth][np.clip(nodes, 0, None)]
        mask[:, off : off + size] = (children >= 0) & (nodes >= 0)[:, None]
        return mask

    def contains(self, prefix: Sequence[int]) -> bool:
        """Whether ``prefix`` (tokens, up to a full code) starts some item's code."""
        tokens = np.asarray(prefix, dtype=np.int64).reshape(1, -1)
        if tokens.shape[1] > self.vocabulary.depth:
            return False
        return bool(self._walk(tokens)[0] >= 0)

    def children(self, depth: int, nodes: torch.Tensor) -> torch.Tensor:
        """Children (..., sizes[depth]) of trie nodes at ``depth`` (a torch tensor on any
        device; items at the last level); negative nodes give -1 rows."""
        tables = self._torch.get(nodes.device)
        if tables is None:
            tables = [torch.from_numpy(t).to(nodes.device) for t in self.tables]
            self._torch[nodes.device] = tables
        out = tables[depth][nodes.clamp(min=0)]
        return out.masked_fill((nodes < 0)[..., None], -1)
