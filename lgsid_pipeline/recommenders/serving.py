"""Which recommendations are served: the champion gate and the per-user top-K cache rows.

A newly trained model is promoted to ``champion`` only if it beats both the current champion
and floor (b) (the user's own most visited items, then the 2 km list) on the same validation
examples. The cache serves the champion while it still beats floor (b), else floor (b).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

FLOOR_SERVED = "floor/user_history_2km"


@dataclass(frozen=True)
class GateDecision:
    """Outcome of :func:`champion_gate`: promote the candidate or not, what the cache should
    serve (``candidate``, ``champion`` or ``floor``) and why, with the scores compared."""

    promote: bool
    serve: str
    reason: str
    candidate: float
    floor: float
    champion: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def champion_gate(candidate: float, floor: float, champion: float | None) -> GateDecision:
    """Decide on validation Hit@10: the candidate must beat floor (b) and the current
    champion (``None`` when there is none, or when it cannot be scored on these examples)."""
    champion_serves = champion is not None and champion > floor
    fallback = "champion" if champion_serves else "floor"
    if candidate <= floor:
        return GateDecision(
            False,
            fallback,
            f"candidate valid Hit@10 {candidate:.4f} does not beat floor (b) {floor:.4f}",
            candidate,
            floor,
            champion,
        )
    if champion is not None and candidate <= champion:
        return GateDecision(
            False,
            fallback,
            f"candidate valid Hit@10 {candidate:.4f} does not beat the champion's {champion:.4f}",
            candidate,
            floor,
            champion,
        )
    versus = "no scored champion" if champion is None else f"champion {champion:.4f}"
    return GateDecision(
        True,
        "candidate",
        f"candidate valid Hit@10 {candidate:.4f} beats floor (b) {floor:.4f} and {versus}",
        candidate,
        floor,
        champion,
    )


def cache_rows(
    city: str,
    users: np.ndarray,
    items: np.ndarray,
    item_ids: np.ndarray,
    codes: np.ndarray,
    scores: np.ndarray,
    served: str,
) -> pd.DataFrame:
    """The ``user_topk_cache`` rows of ranked ``items`` (U, k) per user; ``served`` names
    the model (or floor) that produced them."""
    n_users, k = items.shape
    flat = items.ravel()
    return pd.DataFrame(
        {
            "city": city,
            "user_id": np.repeat(np.asarray(users).astype(str), k),
            "rank": np.tile(np.arange(1, k + 1), n_users),
            "item_id": np.asarray(item_ids)[flat],
            "code": np.asarray(codes)[flat],
            "score": np.asarray(scores, dtype=float).ravel(),
            "model": served,
            "refreshed_at": pd.Timestamp.now(tz="UTC"),
        }
    )
