"""Runner for dbt_like_sql/ models and the reference data they join (no Dagster)."""
