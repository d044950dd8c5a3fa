-- Interaction figures of one city for `lgsid report`.
SELECT
    count(*)                AS rows,
    count(DISTINCT user_id) AS users,
    count(DISTINCT item_id) AS items_visited,
    min(ts)                 AS first_ts,
    max(ts)                 AS last_ts
FROM interactions
WHERE city = $city;
