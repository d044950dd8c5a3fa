"""Discriminative (CTR) backbones DIN, DIEN, SIM, TWIN and ETA in one skeleton (METHOD 5).

Every backbone shares the item encoder (item id + semantic-ID tokens + category), the
DIN target attention and the MLP head over [user, target, interest vector(s),
target * interest vector(s), log1p distance]. They differ only in how the interest
vectors are built:

- din:  target attention over the short sequence.
- dien: GRU interest extractor + AUGRU interest evolution over the short sequence
  (auxiliary next-behaviour loss weighted by ``aux_loss_weight``; 0 turns it off).
- sim / twin / eta: DIN over the short sequence plus target attention over the top-k
  behaviours of the long sequence; only the selector that picks those top-k differs
  (SIM hard search on the level-1 token or category, TWIN cheap stage-1 attention,
  ETA SimHash Hamming distance). See ``LONG_SELECTORS``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lgsid_pipeline.catalog import LONG_SEQUENCE_BACKBONES
from lgsid_pipeline.recommenders.blocks import (
    AUGRUCell,
    CtrBatch,
    ItemEncoder,
    SimHash,
    TargetAttention,
    hamming,
    masked_softmax,
    mlp,
    run_augru,
    run_masked_gru,
    top_k_positions,
)
from lgsid_pipeline.recommenders.config import CtrConfig

# A selector picks long-sequence behaviours for each sample: (model, batch, target repr)
# -> (positions (B, k), real (B, k) bool); positions flagged False are filler (fewer than k
# candidates) and get no attention. Selection is not differentiable.
Selection = tuple[torch.Tensor, torch.Tensor]
LongSelector = Callable[["CtrModel", CtrBatch, torch.Tensor], Selection]


def _recency(batch: CtrBatch) -> torch.Tensor:
    """Position of each long behaviour scaled to [0, 1) (larger = more recent)."""
    m = batch.long_items.shape[1]
    return torch.arange(m, device=batch.long_items.device, dtype=torch.float32) / max(m, 1)


def select_sim(model: CtrModel, batch: CtrBatch, target: torch.Tensor) -> Selection:
    """SIM General Search Unit (hard search): behaviours sharing the target's level-1 token
    (its category when L = 0, never the unknown category 0), the most recent first."""
    if batch.n_levels:
        match = batch.long_codes[..., 0] == batch.target_codes[:, :1]
        match &= batch.long_codes[..., 0] >= 0
    else:
        match = batch.long_category == batch.target_category[:, None]
        match &= batch.long_category > 0
    match &= batch.long_mask
    scores = _recency(batch).expand_as(match).masked_fill(~match, float("-inf"))
    return top_k_positions(scores, model.config.top_k)


def select_twin(model: CtrModel, batch: CtrBatch, target: torch.Tensor) -> Selection:
    """TWIN stage 1: score every long behaviour with the cheap form of the same target
    attention that stage 2 applies in full, keep the top-k."""
    with torch.no_grad():
        keys = model.encode(batch.long_items, batch.long_codes, batch.long_category)
        scores = model.long_attention.cheap_scores(target, keys)
    return top_k_positions(scores.masked_fill(~batch.long_mask, float("-inf")), model.config.top_k)


def select_eta(model: CtrModel, batch: CtrBatch, target: torch.Tensor) -> Selection:
    """ETA: SimHash the target and every long behaviour, keep the k nearest in Hamming
    distance (ties go to the more recent behaviour)."""
    with torch.no_grad():
        keys = model.encode(batch.long_items, batch.long_codes, batch.long_category)
        dist = hamming(model.simhash(target), model.simhash(keys))
        # recency < 1 only reorders behaviours at the same (integer) distance
        scores = _recency(batch) - dist
    return top_k_positions(scores.masked_fill(~batch.long_mask, float("-inf")), model.config.top_k)


LONG_SELECTORS: dict[str, LongSelector] = {
    "sim": select_sim,
    "twin": select_twin,
    "eta": select_eta,
}
assert tuple(LONG_SELECTORS) == LONG_SEQUENCE_BACKBONES


class CtrModel(nn.Module):
    """One CTR skeleton for all five backbones; ``forward(batch)`` returns logits (B,)."""

    def __init__(self, config: CtrConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.item_encoder = ItemEncoder(
                config.n_items, config.n_categories, config.codebook_sizes, d
            )
            self.user = nn.Embedding(config.n_users + 1, d, padding_idx=0)
            self.short_attention = TargetAttention(d, config.attention_hidden)
            n_interests = 1
            if config.backbone == "dien":
                self.extractor = nn.GRUCell(d, d)
                self.evolution = AUGRUCell(d, d)
                self.aux_head = mlp([2 * d, config.attention_hidden], 0.0)
            if config.uses_long_sequence:
                self.long_attention = TargetAttention(d, config.attention_hidden)
                n_interests = 2
            if config.backbone == "eta":
                self.simhash = SimHash(d, config.hash_bits, config.seed)
            self.head = mlp([(2 + 2 * n_interests) * d + 1, *config.mlp_hidden], config.dropout)

    def encode(
        self, items: torch.Tensor, codes: torch.Tensor, category: torch.Tensor
    ) -> torch.Tensor:
        """Item representations (..., dim)."""
        return self.item_encoder(items, codes, category)

    def check_batch(self, batch: CtrBatch) -> None:
        """Raise ValueError if ``batch`` does not fit this model (code levels, index ranges,
        distances), instead of failing deep inside torch."""
        if not isinstance(batch, CtrBatch):
            raise ValueError(f"expected a CtrBatch, got {type(batch).__name__}")
        batch.validate()
        sizes = self.config.codebook_sizes
        for name in ("target_codes", "hist_codes", "long_codes"):
            codes = getattr(batch, name)
            if codes.shape[-1] != len(sizes):
                raise ValueError(
                    f"{name} has {codes.shape[-1]} code levels but the model was "
                    f"configured with {len(sizes)} (codebook_sizes={sizes})"
                )
            for level, k in enumerate(sizes):
                column = codes[..., level]
                if column.numel() and (column.min() < -1 or column.max() >= k):
                    bad = column[(column < -1) | (column >= k)][0].item()
                    raise ValueError(
                        f"{name} level {level + 1} holds token {bad}, outside "
                        f"[0, {k}) (codebook_sizes={sizes}; -1 = missing token)"
                    )
        bounds = {
            "user": self.config.n_users,
            "target_item": self.config.n_items,
            "hist_items": self.config.n_items,
            "long_items": self.config.n_items,
            "target_category": self.config.n_categories,
            "hist_category": self.config.n_categories,
            "long_category": self.config.n_categories,
        }
        for name, top in bounds.items():
            values = getattr(batch, name)
            if values.numel() and (values.min() < 0 or values.max() > top):
                raise ValueError(
                    f"{name} holds values in [{values.min().item()}, "
                    f"{values.max().item()}], outside [0, {top}] (0 = unknown)"
                )
        dist = batch.distance_km
        if not torch.isfinite(dist).all() or (dist < 0).any():
            raise ValueError("distance_km must be finite and >= 0")

    def forward(self, batch: CtrBatch) -> torch.Tensor:
        """Click logits (B,)."""
        return self.forward_with_aux(batch)[0]

    def forward_with_aux(
        self, batch: CtrBatch, check: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B,), auxiliary loss scalar). The auxiliary loss is DIEN's next-behaviour
        loss when ``aux_loss_weight`` > 0 and the model is training, else 0."""
        if check:
            self.check_batch(batch)
        target = self.encode(batch.target_item, batch.target_codes, batch.target_category)
        hist = self.encode(batch.hist_items, batch.hist_codes, batch.hist_category)
        aux = target.new_zeros(())
        if self.config.backbone == "dien":
            interest, aux = self._dien(target, hist, batch.hist_mask)
            interests = [interest]
        else:
            interests = [self.short_attention(target, hist, batch.hist_mask)]
        if self.config.uses_long_sequence:
            interests.append(self._long_interest(batch, target))
        # target * interest: an explicit match feature; without it the MLP is slow to learn
        # "the target resembles what the user did" from small data
        features = [
            self.user(batch.user),
            target,
            *interests,
            *(target * i for i in interests),
            torch.log1p(batch.distance_km).unsqueeze(-1),
        ]
        return self.head(torch.cat(features, dim=-1)).squeeze(-1), aux

    def _dien(
        self, target: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states = run_masked_gru(self.extractor, hist, mask)
        # DIEN normalises the AUGRU attention with a softmax over the sequence (unlike DIN)
        att = masked_softmax(self.short_attention.scores(target, states), mask)
        interest = run_augru(self.evolution, states, att, mask)
        aux = target.new_zeros(())
        if self.training and self.config.aux_loss_weight > 0 and hist.shape[1] > 1:
            aux = self._aux_loss(states, hist, mask)
        return interest, aux

    def _aux_loss(
        self, states: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """DIEN auxiliary loss: h_t should tell the real next behaviour e_{t+1} from a
        negative, here the same step of another sample in the batch."""
        pairs = mask[:, :-1] & mask[:, 1:]
        negatives = hist.roll(1, dims=0)[:, 1:]
        neg_mask = pairs & mask.roll(1, dims=0)[:, 1:]
        h = states[:, :-1]
        pos_logit = self.aux_head(torch.cat([h, hist[:, 1:]], dim=-1)).squeeze(-1)
        neg_logit = self.aux_head(torch.cat([h, negatives], dim=-1)).squeeze(-1)
        bce = nn.functional.binary_cross_entropy_with_logits
        pos = bce(pos_logit, torch.ones_like(pos_logit), reduction="none")[pairs]
        neg = bce(neg_logit, torch.zeros_like(neg_logit), reduction="none")[neg_mask]
        if pos.numel() == 0:
            return hist.new_zeros(())
        return pos.mean() + (neg.mean() if neg.numel() else 0.0)

    def _long_interest(self, batch: CtrBatch, target: torch.Tensor) -> torch.Tensor:
        """Target attention over the long-sequence behaviours the backbone's selector keeps."""
        if batch.long_items.shape[1] == 0:
            return torch.zeros_like(target)
        positions, real = LONG_SELECTORS[self.config.backbone](self, batch, target)
        items = batch.long_items.gather(1, positions)
        category = batch.long_category.gather(1, positions)
        codes = batch.long_codes.gather(
            1, positions.unsqueeze(-1).expand(-1, -1, batch.long_codes.shape[-1])
        )
        keys = self.encode(items, codes, category)
        return self.long_attention(target, keys, real)

    def selected_positions(self, batch: CtrBatch) -> Selection:
        """The long-sequence positions (B, k) and their validity that this backbone's
        selector picks (for inspection and tests; long-sequence backbones only)."""
        if not self.config.uses_long_sequence:
            raise ValueError(f"backbone {self.config.backbone!r} does not use the long sequence")
        self.check_batch(batch)
        with torch.no_grad():
            target = self.encode(batch.target_item, batch.target_codes, batch.target_category)
            return LONG_SELECTORS[self.config.backbone](self, batch, target)
