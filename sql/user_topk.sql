-- One user's cached top-K recommendations with item names ($city, $user_id, $k).
SELECT c.rank, c.item_id, c.code, c.score, c.model, c.refreshed_at, i.name, i.category,
       i.admin_l1_name, i.admin_l2_name
FROM user_topk_cache AS c
LEFT JOIN items AS i ON i.city = c.city AND i.item_id = c.item_id
WHERE c.city = $city AND c.user_id = $user_id AND c.rank <= $k
ORDER BY c.rank;
