"""Pipeline health and recovery KPIs, the alert sink and incident bookkeeping (no Dagster imports)."""
