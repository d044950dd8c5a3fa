"""Primary-level features F_i = [w_admin f_admin, w_geo f_geo, w_cat f_cat, w_brand f_brand].

Admin areas (levels 1 and 2), categories and brands are one-hot over vocabularies fixed at fit
time (unseen values at assignment time get an all-zero block). Coordinates are city-relative:
each city has a frame (centre and one isotropic scale in km) so that every city spreads over
the same region of feature space and uses the whole primary codebook. Each block has unit norm
before weighting, so the weights say directly how much each kind of information counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from lgsid_pipeline.tokenizer.config import TokenizerConfig

KM_PER_DEGREE = 111.32
FEATURE_COLUMNS = (
    "city",
    "latitude",
    "longitude",
    "admin_l1_code",
    "admin_l2_code",
    "category",
    "brand",
)


@dataclass
class CityFrame:
    """Centre (degrees) and isotropic scale (km) used to normalise one city's coordinates."""

    latitude: float
    longitude: float
    scale_km: float


@dataclass
class PrimaryFeatureSpec:
    """Vocabularies, city frames and block weights of the primary features."""

    admin_vocab: list[str]
    category_vocab: list[str]
    brand_vocab: list[str]
    frames: dict[str, CityFrame]
    w_admin: float
    w_geo: float
    w_cat: float
    w_brand: float

    @property
    def dim(self) -> int:
        return len(self.admin_vocab) + 2 + len(self.category_vocab) + len(self.brand_vocab)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PrimaryFeatureSpec:
        frames = {k: CityFrame(**v) for k, v in data["frames"].items()}
        return cls(**{**data, "frames": frames})

    def column_names(self) -> list[str]:
        """One name per feature column (vocabulary entries, then the two coordinates)."""
        return (
            [f"admin:{v}" for v in self.admin_vocab]
            + ["geo:x", "geo:y"]
            + [f"category:{v}" for v in self.category_vocab]
            + [f"brand:{v}" for v in self.brand_vocab]
        )

    def carry_over(self, centres: np.ndarray, old: PrimaryFeatureSpec) -> np.ndarray:
        """Centres fitted in ``old``'s feature space, re-expressed in this one (columns
        matched by name; new vocabulary entries start at zero)."""
        index = {name: i for i, name in enumerate(old.column_names())}
        out = np.zeros((len(centres), self.dim), dtype=np.float32)
        for j, name in enumerate(self.column_names()):
            if name in index:
                out[:, j] = centres[:, index[name]]
        return out


def check_feature_columns(items: pd.DataFrame) -> None:
    """Raise a clear error when the items table lacks a column the features need."""
    missing = [c for c in FEATURE_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(f"items lack columns needed by the primary features: {missing}")
    coords = items[["latitude", "longitude"]].astype(float).to_numpy()
    if not np.isfinite(coords).all():
        raise ValueError(
            f"{int((~np.isfinite(coords)).any(axis=1).sum())} items have "
            "missing or non-finite coordinates"
        )


def city_frame(items: pd.DataFrame) -> CityFrame:
    """A city's frame from its items: median centre, RMS distance from it in km."""
    lat = items["latitude"].astype(float).to_numpy()
    lon = items["longitude"].astype(float).to_numpy()
    lat0, lon0 = float(np.median(lat)), float(np.median(lon))
    dy = (lat - lat0) * KM_PER_DEGREE
    dx = (lon - lon0) * KM_PER_DEGREE * np.cos(np.radians(lat0))
    scale = float(np.sqrt(np.mean(dx**2 + dy**2))) if len(lat) else 1.0
    return CityFrame(lat0, lon0, max(scale, 1e-3))


def _admin_values(items: pd.DataFrame) -> list[list[str]]:
    """Per item, its level-1 and level-2 admin codes as vocabulary entries."""
    out: list[list[str]] = []
    l1 = items["admin_l1_code"].astype("string").tolist()
    l2 = items["admin_l2_code"].astype("string").tolist()
    city = items["city"].astype(str).tolist()
    for c, a, b in zip(city, l1, l2, strict=True):
        values = []
        if not pd.isna(a):
            values.append(f"{c}/1/{a}")
        if not pd.isna(b):
            values.append(f"{c}/2/{b}")
        out.append(values)
    return out


def _vocab(values: pd.Series, max_size: int) -> list[str]:
    """The most frequent non-missing values seen at least twice (ties by value)."""
    counts = values.dropna().astype(str).value_counts()
    counts = counts[counts >= 2]
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_size]
    return sorted(v for v, _ in ordered)


def fit_feature_spec(items: pd.DataFrame, config: TokenizerConfig) -> PrimaryFeatureSpec:
    """Vocabularies and city frames from the training items."""
    check_feature_columns(items)
    admin = sorted({v for values in _admin_values(items) for v in values})
    frames = {str(city): city_frame(group) for city, group in items.groupby("city", sort=True)}
    return PrimaryFeatureSpec(
        admin_vocab=admin,
        category_vocab=_vocab(items["category"].astype("string"), config.max_vocab),
        brand_vocab=_vocab(items["brand"].astype("string"), config.max_vocab),
        frames=frames,
        w_admin=config.w_admin,
        w_geo=config.w_geo,
        w_cat=config.w_cat,
        w_brand=config.w_brand,
    )


def _one_hot(values: list[list[str]], vocab: list[str]) -> np.ndarray:
    """Rows with 1/sqrt(k) in the k known columns of each item (unit norm, or all zero)."""
    index = {v: i for i, v in enumerate(vocab)}
    out = np.zeros((len(values), len(vocab)), dtype=np.float32)
    for row, entries in enumerate(values):
        cols = [index[v] for v in entries if v in index]
        if cols:
            out[row, cols] = 1.0 / np.sqrt(len(cols))
    return out


def _single(values: pd.Series) -> list[list[str]]:
    return [[] if pd.isna(v) else [str(v)] for v in values.astype("string").tolist()]


def primary_features(items: pd.DataFrame, spec: PrimaryFeatureSpec) -> np.ndarray:
    """The (n, spec.dim) primary feature matrix.

    A city without a frame in ``spec`` (not seen at fit time) gets one from the items given.
    """
    check_feature_columns(items)
    geo = np.zeros((len(items), 2), dtype=np.float32)
    cities = items["city"].astype(str).to_numpy()
    for city in np.unique(cities):
        rows = cities == city
        frame = spec.frames.get(city) or city_frame(items[rows])
        lat = items.loc[rows, "latitude"].astype(float).to_numpy()
        lon = items.loc[rows, "longitude"].astype(float).to_numpy()
        dy = (lat - frame.latitude) * KM_PER_DEGREE / frame.scale_km
        dx = (
            (lon - frame.longitude)
            * KM_PER_DEGREE
            * np.cos(np.radians(frame.latitude))
            / frame.scale_km
        )
        geo[rows] = np.stack([dx, dy], axis=1)
    blocks = [
        spec.w_admin * _one_hot(_admin_values(items), spec.admin_vocab),
        spec.w_geo * geo,
        spec.w_cat * _one_hot(_single(items["category"]), spec.category_vocab),
        spec.w_brand * _one_hot(_single(items["brand"]), spec.brand_vocab),
    ]
    return np.concatenate(blocks, axis=1).astype(np.float32)
