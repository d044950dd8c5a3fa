-- One item's semantic ID with its name and admin path ($city, $tokenizer, $item_id).
SELECT s.item_id, s.code, s.tokenizer, s.tokenizer_version, i.name, i.category, i.brand,
       i.latitude, i.longitude, i.admin_l1_name, i.admin_l2_name, i.admin_l3_code
FROM semantic_ids AS s
JOIN items AS i ON i.city = s.city AND i.item_id = s.item_id
WHERE s.city = $city AND s.tokenizer = $tokenizer AND s.item_id = $item_id;
