"""Admin spatial join: containment, outside points, parent fill, grid cells, region detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box, mapping

from lgsid_pipeline.geo.admin import (
    BoundaryError,
    BoundaryLevel,
    BoundarySet,
    assign_admin,
    detect_boundary_set,
    named_boundary_sets,
)


def write_polygons(path: Path, features: list[tuple[dict, object]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": props, "geometry": mapping(geom)}
                    for props, geom in features
                ],
            }
        )
    )
    return path


@pytest.fixture
def two_level_region(tmp_path: Path) -> BoundarySet:
    # Level 1 west/east halves; level 2 quarters. The east level-1 polygon is a bit smaller
    # than its level-2 children, as simplified outlines often are.
    l1 = write_polygons(
        tmp_path / "l1.geojson",
        [
            ({"code": "W", "name": "West"}, box(0, 0, 1, 1)),
            ({"code": "E", "name": "East"}, box(1, 0, 1.9, 1)),
        ],
    )
    l2 = write_polygons(
        tmp_path / "l2.geojson",
        [
            ({"code": "W1", "name": "West South", "parent": "W"}, box(0, 0, 1, 0.5)),
            ({"code": "W2", "name": "West North", "parent": "W"}, box(0, 0.5, 1, 1)),
            ({"code": "E1", "name": "East South", "parent": "E"}, box(1, 0, 2, 0.5)),
            ({"code": "E2", "name": "East North", "parent": "E"}, box(1, 0.5, 2, 1)),
        ],
    )
    return BoundarySet(
        "toy", BoundaryLevel(l1, "code", "name"), BoundaryLevel(l2, "code", "name", "parent")
    )


def test_assign_admin_levels(two_level_region: BoundarySet) -> None:
    lat = np.array([0.25, 0.75, 0.25, 5.0])
    lon = np.array([0.5, 0.5, 1.95, 5.0])
    admin = assign_admin(lat, lon, two_level_region)
    assert admin["admin_l1_code"].tolist()[:3] == ["W", "W", "E"]  # third: filled from parent
    assert admin["admin_l2_code"].tolist()[:3] == ["W1", "W2", "E1"]
    assert admin["admin_l1_name"].iloc[2] == "East"
    assert admin["outside"].tolist() == [False, False, False, True]
    assert admin.iloc[3][["admin_l1_code", "admin_l2_code"]].isna().all()
    # Every point, outside ones included, gets its fine grid cell.
    assert admin["h3_cell"].notna().all()
    assert admin["admin_l3_code"].tolist() == admin["h3_cell"].tolist()


def test_missing_boundary_file_is_a_clear_error(tmp_path: Path) -> None:
    region = BoundarySet(
        "x",
        BoundaryLevel(tmp_path / "no.geojson", "code", "name"),
        BoundaryLevel(tmp_path / "no2.geojson", "code", "name"),
    )
    with pytest.raises(BoundaryError, match="not found"):
        assign_admin(np.array([0.1]), np.array([0.1]), region)


def test_region_detection_on_real_boundaries(shared_data: Path) -> None:
    regions = named_boundary_sets(shared_data / "boundaries")
    tokyo = detect_boundary_set(regions, np.array([35.69, 35.7]), np.array([139.7, 139.6]))
    nyc = detect_boundary_set(regions, np.array([40.75]), np.array([-73.99]))
    assert (tokyo.name, nyc.name) == ("tokyo", "nyc")
    with pytest.raises(BoundaryError, match="no known admin boundaries"):
        detect_boundary_set(regions, np.array([-33.9]), np.array([151.2]))  # Sydney
