-- Item figures of one city for `lgsid report`.
SELECT
    count(*)                                                   AS rows,
    avg(CASE WHEN admin_l1_code IS NOT NULL THEN 1 ELSE 0 END) AS admin_level1_share,
    avg(CASE WHEN admin_l2_code IS NOT NULL THEN 1 ELSE 0 END) AS admin_level2_share,
    avg(CASE WHEN admin_l3_code IS NOT NULL THEN 1 ELSE 0 END) AS admin_level3_share,
    avg(CASE WHEN outside THEN 1 ELSE 0 END)                   AS outside_share,
    count(DISTINCT admin_l1_code)                              AS level1_areas,
    count(DISTINCT admin_l2_code)                              AS level2_areas,
    count(DISTINCT admin_l3_code)                              AS level3_areas,
    count(DISTINCT brand)                                      AS brands,
    avg(CASE WHEN brand IS NOT NULL THEN 1 ELSE 0 END)         AS chain_share
FROM items
WHERE city = $city;
