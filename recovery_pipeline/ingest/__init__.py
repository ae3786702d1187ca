"""Raw ingestion with dlt: export drop folder and SQL billing database sources (no Dagster)."""
