"""Monitoring assets: source freshness, pipeline health, recovery KPIs (with a chart)."""


from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import dagster as dg

from recovery_pipeline.monitoring.charts import png_markdown, recovery_chart_png
from recovery_pipeline.monitoring.health import pipeline_health as health_metrics
from recovery_pipeline.reconciliation import sqlrun
from recovery_pipeline.reconciliation.warehouse_con import connect
from recovery_pipeline.resources import (
    OpsStoreResource,
    PipelineSettingsResource,
    ReconciliationConfig,
    WarehouseResource,
)


def _deps(schema: str, name: str, extra: list[dg.AssetKey] | None = None) -> list[dg.AssetKey]:
    return [dg.AssetKey([s, t]) for s, t in sqlrun.table_deps(schema, name)] + (extra or [])


@dg.asset(
    key=["monitoring", "source_freshness"],
    group_name="monitoring",
    kinds={"duckdb", "sql"},
    deps=_deps("monitoring", "source_freshness"),
)
def source_freshness(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """How fresh the billing data is: the newest source timestamp (updated_at, the billing
    system's own clock, not the sync time) of canonical subscriptions, invoices and transactions,
    and how many hours it lags behind now. Checks say whether each is within the allowed lag."""
    with connect(warehouse.target) as con:
        n = sqlrun.materialize(con, "monitoring", "source_freshness", {"as_of": datetime.now(UTC)})
        frame = con.execute("select * from monitoring.source_freshness").df()
    return dg.MaterializeResult(metadata={
        "dagster/row_count": n,
        **{f"lag_hours_{r.entity}": (None if pd.isna(r.lag_hours) else float(r.lag_hours))
           for r in frame.itertuples()},
        "preview": dg.MetadataValue.md(frame.to_markdown(index=False))})


@dg.asset(
    key=["monitoring", "pipeline_health"],
    group_name="monitoring",
    kinds={"duckdb", "python"},
)
def pipeline_health(warehouse: WarehouseResource, ops_store: OpsStoreResource,
                    reconciliation: ReconciliationConfig) -> dg.MaterializeResult:
    """Health of the integration over the last 24 hours, from the ops store: webhook delivery
    success rate (accepted vs rejected) and processing latency, the backlog of recovery actions
    and those missed after their ideal retry time, provider API request failures and retries,
    and dead letters. Kept as a history in ``monitoring.pipeline_health`` (one row per metric
    per run)."""
    now = datetime.now(UTC)
    metrics = health_metrics(ops_store.engine(), reconciliation.reconciliation_settings(), now)
    frame = pd.DataFrame({"measured_at": pd.Timestamp(now), "metric": list(metrics),
                          "value": [None if v is None else float(v) for v in metrics.values()]})
    with connect(warehouse.target) as con:
        con.execute("create schema if not exists monitoring")
        con.execute("create table if not exists monitoring.pipeline_health "
                    "(measured_at timestamptz, metric varchar, value double)")
        con.register("_health", frame)
        try:
            con.execute("insert into monitoring.pipeline_health select measured_at, metric, value from _health")
        finally:
            con.unregister("_health")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(frame),
        **{k: (dg.MetadataValue.float(float(v)) if v is not None else dg.MetadataValue.null())
           for k, v in metrics.items()}})


@dg.asset(
    key=["monitoring", "recovery_kpis"],
    group_name="monitoring",
    kinds={"duckdb", "sql"},
    deps=_deps("monitoring", "recovery_kpis", [dg.AssetKey(["reconciliation", "monthly_parity"])]),
)
def recovery_kpis(warehouse: WarehouseResource,
                  pipeline_settings: PipelineSettingsResource) -> dg.MaterializeResult:
    """Recovery KPIs by invoice month: of the invoices with a failed payment, the share paid
    after the failure (recovery rate) and the share that ended unrecovered (failed-recovery
    rate), and the amount recovered per currency. Published only after the parity checks pass
    (they are blocking), so the numbers shown agree with what the provider holds. The chart
    shows both rates and the recovered amount month by month."""
    with connect(warehouse.target) as con:
        n = sqlrun.materialize(con, "monitoring", "recovery_kpis")
        kpis = con.execute("select * from monitoring.recovery_kpis").df()
    overall = kpis[kpis["currency"] == "all"]
    failed = int(overall["failed_invoices"].sum())
    recovered = int(overall["recovered_invoices"].sum())
    unrecovered = int(overall["unrecovered_invoices"].sum())
    chart, chart_file = "(no data)", None
    if len(overall):
        png = recovery_chart_png(kpis)
        chart = png_markdown(png, "recovery rate and recovered amount by month")
        chart_file = Path(pipeline_settings.data_dir) / "charts" / "recovery_kpis.png"
        chart_file.parent.mkdir(parents=True, exist_ok=True)
        chart_file.write_bytes(png)
    amounts = (kpis[kpis["currency"] != "all"].groupby("currency")["recovered_amount_minor"].sum()
               .sort_values(ascending=False).head(10))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": n,
        "recovery_rate": (recovered / failed) if failed else 0.0,
        "failed_recovery_rate": (unrecovered / failed) if failed else 0.0,
        "invoices_with_failure": failed,
        "recovered_invoices": recovered,
        "recovered_amount_minor_by_currency": dg.MetadataValue.json(
            {k: int(v) for k, v in amounts.items()}),
        "chart": dg.MetadataValue.md(chart),
        "chart_file": dg.MetadataValue.path(str(chart_file)) if chart_file else dg.MetadataValue.null(),
        "by_month": dg.MetadataValue.md(
            overall[["month", "failed_invoices", "recovered_invoices", "unrecovered_invoices",
                     "recovery_rate", "failed_recovery_rate"]].to_markdown(index=False)
            if len(overall) else "(empty)"),
    })
