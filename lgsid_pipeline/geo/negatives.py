"""Density-aware list-wise geo samples (METHOD section 1).

For each anchor item i: the true location plus K mismatched locations l_j taken from other
items j, so that prompt(c_i, l_j) differs from the true prompt. Because the prompt names the
location by its admin areas, a mismatched location is an *area* (level 2 within level 1):
each list holds K distinct other areas, represented by one item j of each.

- Dense anchors get mostly hard negatives (the nearest other areas, a few hundred metres to
  a few km away); sparse anchors spread further (a mid ring); every list holds some far
  ones (another level-1 area) and, where they exist, same-name places in other areas.
- Soft labels: 1 for the true location; for negatives either by distance rank,
  p = (K - rank + 1) / (K + 1), or exp(-d / sigma).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lgsid_pipeline.geo.distance import haversine_km, local_density

NEGATIVE_COLUMNS = (
    "anchor_item_id",
    "slot",
    "location_item_id",
    "distance_km",
    "soft_label",
    "kind",
)


@dataclass(frozen=True)
class GeoNegativeConfig:
    """Density-aware list-wise sampling of geo negatives (METHOD section 1); recorded with
    every model trained on the samples."""

    k: int = 15
    max_anchors: int = 4000
    far_share: float = 0.2
    max_same_name: int = 2
    density_radius_km: float = 1.0
    label: str = "rank"  # "rank" or "exp"
    sigma_km: float = 3.0
    seed: int = 0


def location_keys(items: pd.DataFrame) -> pd.Series:
    """The location text identity of each item: (level 2, level 1) area names."""
    l2 = items["admin_l2_name"].astype("string").fillna("")
    l1 = items["admin_l1_name"].astype("string").fillna("")
    return (l2 + "|" + l1).astype("string")


def soft_labels(distances: np.ndarray, config: GeoNegativeConfig) -> np.ndarray:
    """Soft labels for negatives of one list (distance ascending = higher label)."""
    if config.label == "exp":
        return np.exp(-distances / config.sigma_km)
    if config.label != "rank":
        raise ValueError(f"unknown soft label {config.label!r}; use 'rank' or 'exp'")
    ranks = np.empty(len(distances), dtype=float)
    ranks[np.argsort(distances, kind="stable")] = np.arange(1, len(distances) + 1)
    return (config.k - ranks + 1) / (config.k + 1)


def _pick(rng: np.random.Generator, pool: np.ndarray, n: int, taken: set[int]) -> list[int]:
    free = [int(a) for a in pool if int(a) not in taken]
    if n <= 0 or not free:
        return []
    return [int(a) for a in rng.choice(free, size=min(n, len(free)), replace=False)]


def sample_geo_negatives(items: pd.DataFrame, config: GeoNegativeConfig) -> pd.DataFrame:
    """List-wise samples for up to ``config.max_anchors`` anchors: K + 1 rows per anchor."""
    if len(items) == 0:
        raise ValueError("no items to sample geo negatives from")
    rng = np.random.default_rng(config.seed)
    items = items.reset_index(drop=True)
    lat = items["latitude"].to_numpy(float)
    lon = items["longitude"].to_numpy(float)
    area_of_item, area_names = pd.factorize(location_keys(items))
    n_areas = len(area_names)
    if n_areas < 2:
        raise ValueError("geo negatives need items in at least two admin areas")
    members = [np.flatnonzero(area_of_item == a) for a in range(n_areas)]
    centre_lat = np.array([lat[m].mean() for m in members])
    centre_lon = np.array([lon[m].mean() for m in members])
    l1_of_area = (
        pd.Series(items["admin_l1_code"].astype("string").fillna(""))
        .groupby(area_of_item)
        .first()
        .to_numpy()
    )
    density = local_density(lat, lon, config.density_radius_km)
    density_q = pd.Series(density).rank(pct=True).to_numpy()
    name_key = items["name"].astype("string").str.lower().str.strip()
    same_name_groups = name_key[name_key.notna()].groupby(name_key[name_key.notna()]).groups

    n_anchors = min(config.max_anchors, len(items))
    anchors = np.sort(rng.choice(len(items), size=n_anchors, replace=False))
    rows: list[tuple] = []
    for i in anchors:
        own = area_of_item[i]
        dist_to_areas = haversine_km(lat[i], lon[i], centre_lat, centre_lon)
        order = [int(a) for a in np.argsort(dist_to_areas) if a != own]
        chosen: dict[int, str] = {}
        # Same-name places in other areas: the hardest content-preserving negatives.
        others: list[int] = []
        if config.max_same_name and pd.notna(name_key.iloc[i]):
            others = [
                int(j)
                for j in same_name_groups.get(name_key.iloc[i], [])
                if j != i and area_of_item[j] != own
            ]
            for j in others[: config.max_same_name]:
                chosen.setdefault(int(area_of_item[j]), "same_name")
        n_left = config.k - len(chosen)
        n_far = max(1, round(config.k * config.far_share))
        # Dense anchors: mostly the nearest areas; sparse anchors: more from the mid ring.
        n_near = round((n_left - n_far) * (0.4 + 0.5 * density_q[i]))
        n_mid = n_left - n_far - n_near
        far_pool = np.array([a for a in order if l1_of_area[a] != l1_of_area[own]], dtype=int)
        if len(far_pool) == 0:
            far_pool = np.array(order[len(order) // 2 :], dtype=int)
        for a in _pick(rng, far_pool, n_far, set(chosen)):
            chosen[a] = "far"
        near = [a for a in order if a not in chosen][:n_near]
        chosen.update({a: "near" for a in near})
        mid_pool = np.array([a for a in order if a not in chosen][: max(3 * n_mid, 10)], dtype=int)
        for a in _pick(rng, mid_pool, n_mid, set(chosen)):
            chosen[a] = "mid"
        remaining = np.array([a for a in order if a not in chosen], dtype=int)
        for a in _pick(rng, remaining, config.k - len(chosen), set(chosen)):
            chosen[a] = "mid"
        areas = list(chosen)
        if len(areas) < config.k:  # fewer areas than K: repeat areas with other items
            areas += [int(a) for a in rng.choice(order, size=config.k - len(areas))]
        locs = []
        for a in areas[: config.k]:
            same = [j for j in others if area_of_item[j] == a]
            pool = same if chosen.get(a) == "same_name" and same else members[a]
            locs.append(int(rng.choice(pool)))
        locs_arr = np.array(locs)
        dists = haversine_km(lat[i], lon[i], lat[locs_arr], lon[locs_arr])
        labels = soft_labels(dists, config)
        anchor_id = items.at[i, "item_id"]
        rows.append((anchor_id, 0, anchor_id, 0.0, 1.0, "true"))
        for slot, (j, d, p, a) in enumerate(
            zip(locs_arr, dists, labels, areas, strict=False), start=1
        ):
            rows.append(
                (anchor_id, slot, items.at[j, "item_id"], float(d), float(p), chosen.get(a, "mid"))
            )
    return pd.DataFrame(rows, columns=list(NEGATIVE_COLUMNS))
