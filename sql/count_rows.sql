-- Row count of one table for one city; {table} is a fixed table name from warehouse.TABLES.
SELECT count(*) AS rows FROM {table} WHERE city = $city;
