"""Shared pieces of the CTR backbones: the batch contract and the neural building blocks.

Sequences are ordered oldest -> newest along axis 1; a mask marks the real behaviours.
Padding may sit anywhere (left padding is the convention, so the last column is the most
recent behaviour); every block skips masked positions.

Semantic-ID tokens: ``*_codes[..., l]`` holds the level-l token in ``0..K_l-1``; ``-1``
marks a missing token. Inside the model a token t is looked up as row t + 1, so row 0 of
every code table is padding: a zero vector that -1 tokens map to. Values at masked
positions (any in-range value, 0 by convention) are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

_LONG_FIELDS = (
    "user",
    "target_item",
    "target_codes",
    "target_category",
    "hist_items",
    "hist_codes",
    "hist_category",
    "long_items",
    "long_codes",
    "long_category",
)
_FLOAT_FIELDS = ("distance_km", "label")
_BOOL_FIELDS = ("hist_mask", "long_mask")


@dataclass
class CtrBatch:
    """One batch (or a whole split) of CTR samples as plain torch tensors.

    Shapes: B samples, N short-sequence slots, M long-sequence slots, L code levels
    (L = 0 for the "item ids only" variant; M = 0 when no long sequence is needed).
    Index 0 of user, item and category means unknown / padding.
    """

    user: torch.Tensor  # (B,) long
    target_item: torch.Tensor  # (B,) long
    target_codes: torch.Tensor  # (B, L) long
    target_category: torch.Tensor  # (B,) long
    distance_km: torch.Tensor  # (B,) float
    hist_items: torch.Tensor  # (B, N) long
    hist_codes: torch.Tensor  # (B, N, L) long
    hist_category: torch.Tensor  # (B, N) long
    hist_mask: torch.Tensor  # (B, N) bool
    long_items: torch.Tensor  # (B, M) long
    long_codes: torch.Tensor  # (B, M, L) long
    long_category: torch.Tensor  # (B, M) long
    long_mask: torch.Tensor  # (B, M) bool
    label: torch.Tensor  # (B,) float 0/1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check types, dtypes and that all shapes agree (values are checked by the model)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, torch.Tensor):
                raise ValueError(
                    f"CtrBatch.{f.name} must be a torch tensor, got {type(value).__name__}"
                )
            if f.name in _LONG_FIELDS and value.dtype != torch.long:
                raise ValueError(f"CtrBatch.{f.name} must be int64 (torch.long), got {value.dtype}")
            if f.name in _BOOL_FIELDS and value.dtype != torch.bool:
                raise ValueError(f"CtrBatch.{f.name} must be bool, got {value.dtype}")
            if f.name in _FLOAT_FIELDS and not value.is_floating_point():
                raise ValueError(f"CtrBatch.{f.name} must be floating point, got {value.dtype}")
        b = self.user.shape[0] if self.user.ndim == 1 else -1
        n, m, n_levels = (
            self.hist_items.shape[-1],
            self.long_items.shape[-1],
            self.target_codes.shape[-1],
        )
        expected = {
            "user": (b,),
            "target_item": (b,),
            "target_codes": (b, n_levels),
            "target_category": (b,),
            "distance_km": (b,),
            "label": (b,),
            "hist_items": (b, n),
            "hist_codes": (b, n, n_levels),
            "hist_category": (b, n),
            "hist_mask": (b, n),
            "long_items": (b, m),
            "long_codes": (b, m, n_levels),
            "long_category": (b, m),
            "long_mask": (b, m),
        }
        for name, shape in expected.items():
            actual = tuple(getattr(self, name).shape)
            if actual != shape:
                raise ValueError(
                    f"CtrBatch.{name} has shape {actual}, expected {shape} "
                    f"(B={b}, N={n}, M={m}, L={n_levels})"
                )

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @property
    def n_levels(self) -> int:
        """Number of semantic-ID code levels L (0 = item ids only)."""
        return int(self.target_codes.shape[1])

    def index(self, idx: torch.Tensor | np.ndarray | slice | Sequence[int]) -> CtrBatch:
        """The samples selected by ``idx`` (a slice, integer indices or a boolean mask)."""
        if not isinstance(idx, slice):
            idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
            if idx.dtype != torch.bool:
                idx = idx.long()
        return CtrBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def to(self, device: torch.device | str) -> CtrBatch:
        """A copy with every tensor on ``device``."""
        return CtrBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def concat(batches: Sequence[CtrBatch]) -> CtrBatch:
        """Samples of several batches, in order (sequence lengths and L must agree)."""
        if not batches:
            raise ValueError("CtrBatch.concat needs at least one batch")
        try:
            return CtrBatch(
                **{
                    f.name: torch.cat([getattr(b, f.name) for b in batches])
                    for f in fields(CtrBatch)
                }
            )
        except RuntimeError as exc:
            raise ValueError(
                f"cannot concatenate batches with different sequence lengths or code levels: {exc}"
            ) from exc


def _long(x: object, name: str, ndim: int) -> torch.Tensor:
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64))


def batch_from_numpy(
    user: np.ndarray,
    target_item: np.ndarray,
    target_category: np.ndarray,
    distance_km: np.ndarray,
    hist_items: np.ndarray,
    hist_category: np.ndarray,
    *,
    target_codes: np.ndarray | None = None,
    hist_codes: np.ndarray | None = None,
    hist_mask: np.ndarray | None = None,
    long_items: np.ndarray | None = None,
    long_codes: np.ndarray | None = None,
    long_category: np.ndarray | None = None,
    long_mask: np.ndarray | None = None,
    label: np.ndarray | None = None,
) -> CtrBatch:
    """Build a :class:`CtrBatch` from numpy arrays (see the class for shapes).

    Missing codes mean the "none" variant (L = 0); a missing mask is ``items > 0``; a
    missing long sequence is empty (M = 0, fine for DIN / DIEN); a missing label is 0.
    """
    user_t = _long(user, "user", 1)
    b = len(user_t)
    hist_items_t = _long(hist_items, "hist_items", 2)
    if target_codes is None:
        target_codes = np.zeros((b, 0), dtype=np.int64)
    codes_t = _long(target_codes, "target_codes", 2)
    n_levels = codes_t.shape[1]

    def seq_codes(codes: np.ndarray | None, items: torch.Tensor, name: str) -> torch.Tensor:
        if codes is None:
            if n_levels:
                raise ValueError(f"{name} is missing but target_codes has {n_levels} levels")
            return torch.zeros((*items.shape, 0), dtype=torch.long)
        return _long(codes, name, 3)

    def mask(m: np.ndarray | None, items: torch.Tensor, name: str) -> torch.Tensor:
        if m is None:
            return items > 0
        arr = np.asarray(m)
        if arr.dtype.kind not in "bui":
            raise ValueError(f"{name} must be boolean, got dtype {arr.dtype}")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=bool))

    if long_items is None:
        long_items = np.zeros((b, 0), dtype=np.int64)
        long_category = np.zeros((b, 0), dtype=np.int64) if long_category is None else long_category
        if long_codes is None and n_levels:
            long_codes = np.zeros((b, 0, n_levels), dtype=np.int64)
    if long_category is None:
        raise ValueError("long_category is required when long_items is given")
    long_items_t = _long(long_items, "long_items", 2)

    def floats(x: np.ndarray, name: str) -> torch.Tensor:
        arr = np.asarray(x)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.size and arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    return CtrBatch(
        user=user_t,
        target_item=_long(target_item, "target_item", 1),
        target_codes=codes_t,
        target_category=_long(target_category, "target_category", 1),
        distance_km=floats(distance_km, "distance_km"),
        hist_items=hist_items_t,
        hist_codes=seq_codes(hist_codes, hist_items_t, "hist_codes"),
        hist_category=_long(hist_category, "hist_category", 2),
        hist_mask=mask(hist_mask, hist_items_t, "hist_mask"),
        long_items=long_items_t,
        long_codes=seq_codes(long_codes, long_items_t, "long_codes"),
        long_category=_long(long_category, "long_category", 2),
        long_mask=mask(long_mask, long_items_t, "long_mask"),
        label=floats(np.zeros(b) if label is None else label, "label"),
    )


class ItemEncoder(nn.Module):
    """Item representation: [item-id emb, per-level code embs, category emb] -> Linear -> dim."""

    def __init__(
        self, n_items: int, n_categories: int, codebook_sizes: Sequence[int], dim: int
    ) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.codes = nn.ModuleList(nn.Embedding(k + 1, dim, padding_idx=0) for k in codebook_sizes)
        self.category = nn.Embedding(n_categories + 1, dim, padding_idx=0)
        self.proj = nn.Linear((2 + len(self.codes)) * dim, dim)

    def forward(
        self, items: torch.Tensor, codes: torch.Tensor, category: torch.Tensor
    ) -> torch.Tensor:
        """items, category (...), codes (..., L) -> (..., dim)."""
        parts = [self.item(items), self.category(category)]
        parts += [emb(codes[..., level] + 1) for level, emb in enumerate(self.codes)]
        return self.proj(torch.cat(parts, dim=-1))


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``mask``; all-masked rows get zero weights."""
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask


class TargetAttention(nn.Module):
    """DIN local activation unit plus a cheap projected dot-product term.

    score(q, k) = MLP([q, k, q - k, q * k]) + <W_q q, W_k k> / sqrt(d). The dot-product term
    alone is the cheap form TWIN's first stage uses to scan a long sequence, so both
    stages share these parameters and stay consistent.

    Pooling follows DIN: weights are sigmoid(score), not normalised over the sequence, so
    the pooled vector keeps the intensity of the user's interest in the target (a softmax
    would give a user with no related behaviour the same total weight as one with many).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(4 * dim, hidden), nn.PReLU(), nn.Linear(hidden, 1))
        self.scale = 1.0 / math.sqrt(dim)

    def cheap_scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """query (B, d), keys (B, T, d) -> (B, T) projected dot products."""
        return torch.einsum("bd,btd->bt", self.q_proj(query), self.k_proj(keys)) * self.scale

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Full attention scores (B, T)."""
        q = query.unsqueeze(1).expand_as(keys)
        full = self.mlp(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(-1)
        return full + self.cheap_scores(query, keys)

    def weights(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """DIN pooling weights (B, T): sigmoid(score) on masked-in keys, 0 elsewhere."""
        return torch.sigmoid(self.scores(query, keys)) * mask

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        mask: torch.Tensor,
        values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted sum (B, d) of ``values`` (default: the keys)."""
        w = self.weights(query, keys, mask)
        return torch.einsum("bt,btd->bd", w, keys if values is None else values)


class AUGRUCell(nn.Module):
    """GRU cell whose update gate is scaled by an attention score (DIEN's AUGRU).

    u'_t = a_t * u_t;  h_t = (1 - u'_t) * h_{t-1} + u'_t * h~_t.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.x2h = nn.Linear(input_size, 3 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 3 * hidden_size)

    def forward(self, x: torch.Tensor, h: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        """x (B, in), h (B, hidden), att (B,) -> next hidden state (B, hidden)."""
        xr, xu, xn = self.x2h(x).chunk(3, dim=-1)
        hr, hu, hn = self.h2h(h).chunk(3, dim=-1)
        reset = torch.sigmoid(xr + hr)
        update = torch.sigmoid(xu + hu) * att.unsqueeze(-1)
        candidate = torch.tanh(xn + reset * hn)
        return (1 - update) * h + update * candidate


def run_masked_gru(cell: nn.GRUCell, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """All hidden states (B, T, hidden) of ``cell`` over ``inputs``; masked steps carry h."""
    h = inputs.new_zeros(inputs.shape[0], cell.hidden_size)
    states = []
    for t in range(inputs.shape[1]):
        h = torch.where(mask[:, t : t + 1], cell(inputs[:, t], h), h)
        states.append(h)
    if not states:
        return inputs.new_zeros(inputs.shape[0], 0, cell.hidden_size)
    return torch.stack(states, dim=1)


def run_augru(
    cell: AUGRUCell, inputs: torch.Tensor, att: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Final AUGRU state (B, hidden) over ``inputs`` (B, T, in); masked steps carry h."""
    h = inputs.new_zeros(inputs.shape[0], cell.h2h.in_features)
    for t in range(inputs.shape[1]):
        h = torch.where(mask[:, t : t + 1], cell(inputs[:, t], h, att[:, t]), h)
    return h


class SimHash(nn.Module):
    """Sign bits of projections on fixed random hyperplanes (a buffer, saved with the model)."""

    def __init__(self, dim: int, bits: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("planes", torch.randn(dim, bits, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., bits) bool."""
        return (x @ self.planes) > 0


def hamming(query_bits: torch.Tensor, key_bits: torch.Tensor) -> torch.Tensor:
    """query (B, bits), keys (B, T, bits) -> Hamming distances (B, T) as float."""
    return (query_bits.unsqueeze(1) != key_bits).sum(-1).float()


def top_k_positions(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (B, k') of the k best scores per row (k' = min(k, T)) and whether each is
    real: positions scored -inf (masked out or not matched) come back flagged False."""
    k = min(k, scores.shape[1])
    values, positions = scores.topk(k, dim=1)
    return positions, torch.isfinite(values)


def mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear -> PReLU -> Dropout stack ending in a single-logit Linear."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.PReLU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(sizes[-1], 1))
    return nn.Sequential(*layers)
