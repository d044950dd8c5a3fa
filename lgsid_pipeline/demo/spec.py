"""The synthetic city spec, the demo cities, the timeline start and the random streams.

Shared by every module of :mod:`lgsid_pipeline.demo`: ``SyntheticCitySpec``, the per-spec
random streams (``_streams``) and the weighted row sampler used for items and visits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

START_DATE = "2025-01-01"  # a Wednesday
_START_US = int(np.datetime64(START_DATE, "us").astype(np.int64))
_START_WEEKDAY = 2  # Monday = 0


@dataclass(frozen=True)
class SyntheticCitySpec:
    """Name, seed, size, place and extent of one synthetic city."""

    name: str
    seed: int
    n_items: int
    n_users: int | None = None  # default: max(30, n_items // 4)
    days: int = 120  # length of the check-in timeline, from 2025-01-01 UTC
    center_lat: float = 40.0
    center_lon: float = -3.7
    radius_km: float = 8.0

    @property
    def users(self) -> int:
        """The number of users (``n_users`` or its default)."""
        return self.n_users if self.n_users is not None else max(30, self.n_items // 4)


DEMO_CITIES: dict[str, SyntheticCitySpec] = {
    "harborview": SyntheticCitySpec(
        "Harborview", seed=11, n_items=6500, center_lat=47.61, center_lon=-122.33, radius_km=10.0
    ),
    "lakeside": SyntheticCitySpec(
        "Lakeside", seed=22, n_items=5000, center_lat=41.88, center_lon=-87.63, radius_km=8.0
    ),
    "millbrook": SyntheticCitySpec(
        "Millbrook", seed=33, n_items=3500, center_lat=52.52, center_lon=13.40, radius_km=6.0
    ),
}


def _streams(spec: SyntheticCitySpec) -> dict[str, np.random.Generator]:
    names = ("geometry", "items", "names", "chains", "users", "visits")
    children = np.random.SeedSequence(spec.seed).spawn(len(names))
    return {n: np.random.default_rng(s) for n, s in zip(names, children, strict=True)}


def _sample_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column index per row, drawn with probability proportional to the row's weights."""
    cdf = np.cumsum(weights, axis=1)
    target = rng.random(len(weights)) * cdf[:, -1]
    return np.minimum((cdf <= target[:, None]).sum(axis=1), weights.shape[1] - 1)
