-- Quarantined rows of one city by table and reason.
SELECT table_name, reason, count(*) AS rows
FROM quarantine
WHERE city = $city
GROUP BY table_name, reason
ORDER BY table_name, rows DESC, reason;
