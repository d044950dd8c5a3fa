-- D_dc: item pairs co-visited by one user on the same (UTC) day, with their co-visit count.
-- Kept: pairs whose count reaches the $quantile of all pairs' counts (and at least $min_count).
WITH visits AS (
    SELECT DISTINCT user_id, item_id, CAST(ts AS DATE) AS day
    FROM interactions
    WHERE city = $city
),
pairs AS (
    SELECT a.item_id AS item_a, b.item_id AS item_b,
           count(*) AS co_visits, count(DISTINCT a.user_id) AS users
    FROM visits a
    JOIN visits b ON a.user_id = b.user_id AND a.day = b.day AND a.item_id < b.item_id
    GROUP BY a.item_id, b.item_id
),
threshold AS (
    SELECT greatest(coalesce(quantile_disc(co_visits, $quantile), 1), $min_count) AS s_th
    FROM pairs
)
SELECT $city AS city, item_a, item_b, co_visits, users, threshold.s_th AS threshold
FROM pairs, threshold
WHERE co_visits >= threshold.s_th
ORDER BY co_visits DESC, item_a, item_b;
