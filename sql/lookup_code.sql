-- Items whose code is $code or starts with the prefix $code (whole tokens only), with the
-- number of matches in `matches` ($city, $tokenizer, $code, $limit).
SELECT s.item_id, s.code, s.tokenizer, s.tokenizer_version, i.name, i.category, i.brand,
       i.latitude, i.longitude, i.admin_l1_name, i.admin_l2_name, i.admin_l3_code,
       count(*) OVER () AS matches
FROM semantic_ids AS s
JOIN items AS i ON i.city = s.city AND i.item_id = s.item_id
WHERE s.city = $city AND s.tokenizer = $tokenizer
  AND (s.code = $code OR starts_with(s.code, $code || '-'))
ORDER BY s.code
LIMIT $limit;
