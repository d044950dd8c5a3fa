-- One view per warehouse table over every city's Parquet files. Every table carries its own
-- `city` column, so the folder name is not parsed (hive_partitioning off).
-- {table} and {files} are filled in by warehouse.py from fixed table names and paths under the
-- warehouse root ({files}: a list of globs or of the files a published version names); city
-- keys never reach this text (queries take them as parameters).
CREATE OR REPLACE VIEW {table} AS
SELECT * FROM read_parquet({files}, hive_partitioning = false, union_by_name = true);
