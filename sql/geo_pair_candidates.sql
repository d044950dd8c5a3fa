-- D_gc candidates for sampled anchors of one city:
--   near: items within $near_km of the anchor (grid-cell join, then haversine),
--   far:  items with the same category or brand in another level-1 area.
-- The reward model later picks the chosen (near) and rejected (far) item per anchor.
WITH city_items AS (
    SELECT item_id, latitude, longitude, category, brand, admin_l1_code,
           CAST(floor(latitude / $cell_deg) AS BIGINT) AS gy,
           CAST(floor(longitude / $cell_deg) AS BIGINT) AS gx
    FROM items
    WHERE city = $city
),
anchors AS (
    SELECT * FROM city_items
    ORDER BY hash(item_id || CAST($seed AS VARCHAR))
    LIMIT $n_anchors
),
offsets AS (
    SELECT dy, dx FROM range(-1, 2) t1(dy), range(-1, 2) t2(dx)
),
near AS (
    SELECT a.item_id AS anchor_item_id, c.item_id AS candidate_item_id, 'near' AS side,
           2 * 6371.0088 * asin(sqrt(
               pow(sin(radians(c.latitude - a.latitude) / 2), 2)
               + cos(radians(a.latitude)) * cos(radians(c.latitude))
               * pow(sin(radians(c.longitude - a.longitude) / 2), 2))) AS distance_km,
           (c.category IS NOT DISTINCT FROM a.category AND a.category IS NOT NULL)
               OR (c.brand = a.brand) AS same_content
    FROM anchors a
    JOIN offsets o ON TRUE
    JOIN city_items c ON c.gy = a.gy + o.dy AND c.gx = a.gx + o.dx AND c.item_id <> a.item_id
),
far AS (
    SELECT a.item_id AS anchor_item_id, c.item_id AS candidate_item_id, 'far' AS side,
           2 * 6371.0088 * asin(sqrt(
               pow(sin(radians(c.latitude - a.latitude) / 2), 2)
               + cos(radians(a.latitude)) * cos(radians(c.latitude))
               * pow(sin(radians(c.longitude - a.longitude) / 2), 2))) AS distance_km,
           TRUE AS same_content
    FROM anchors a
    JOIN city_items c
      ON c.item_id <> a.item_id
     AND coalesce(c.admin_l1_code, '') <> coalesce(a.admin_l1_code, '')
     AND (c.category = a.category OR c.brand = a.brand)
),
ranked AS (
    SELECT *, row_number() OVER (
        PARTITION BY anchor_item_id, side
        ORDER BY same_content DESC, hash(candidate_item_id || CAST($seed AS VARCHAR))
    ) AS pick
    FROM (SELECT * FROM near WHERE distance_km <= $near_km UNION ALL SELECT * FROM far)
)
SELECT $city AS city, anchor_item_id, candidate_item_id, side, distance_km, same_content
FROM ranked
WHERE pick <= $per_side
ORDER BY anchor_item_id, side, distance_km;
