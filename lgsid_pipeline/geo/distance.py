"""Great-circle distances and local item density."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.neighbors import BallTree

EARTH_RADIUS_KM = 6371.0088


def haversine_km(
    lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray
) -> np.ndarray:
    """Haversine distance in km between paired points (broadcasts like numpy)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dlat = p2 - p1
    dlon = np.radians(lon2) - np.radians(lon1)
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def ball_tree(lat: np.ndarray, lon: np.ndarray) -> BallTree:
    """A haversine BallTree over points (query radii in km / EARTH_RADIUS_KM)."""
    from sklearn.neighbors import BallTree

    return BallTree(np.radians(np.column_stack([lat, lon])), metric="haversine")


def local_density(lat: np.ndarray, lon: np.ndarray, radius_km: float = 1.0) -> np.ndarray:
    """Number of other items within ``radius_km`` of each item."""
    if len(lat) == 0:
        return np.zeros(0, dtype=int)
    tree = ball_tree(lat, lon)
    counts = tree.query_radius(
        np.radians(np.column_stack([lat, lon])), r=radius_km / EARTH_RADIUS_KM, count_only=True
    )
    return counts.astype(int) - 1
