"""Reconciliation assets: ops-store snapshot, monthly parity, state mismatches."""


from datetime import UTC, datetime

import dagster as dg

from recovery_pipeline.reconciliation import ops_snapshot as snapshot_mod
from recovery_pipeline.reconciliation import sqlrun
from recovery_pipeline.reconciliation.warehouse_con import connect
from recovery_pipeline.resources import (
    OpsStoreResource,
    PipelineSettingsResource,
    ReconciliationConfig,
    WarehouseResource,
)


def _deps(schema: str, name: str) -> list[dg.AssetKey]:
    return [dg.AssetKey([s, t]) for s, t in sqlrun.table_deps(schema, name)]


def _preview(con, table: str, order: str, limit: int = 20) -> str:
    frame = con.execute(f"select * from {table} order by {order} limit {int(limit)}").df()
    return frame.to_markdown(index=False) if len(frame) else "(empty)"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(["ops_snapshot", name], group_name="reconciliation", kinds={"duckdb", "sqlite"},
                     description=f"Warehouse copy of the ops store's `{name}` for reconciliation joins.")
        for name in snapshot_mod.SNAPSHOTS
    ],
)
def ops_snapshot(warehouse: WarehouseResource, ops_store: OpsStoreResource):
    """A read-only copy of the ops-store tables the state-mismatch SQL joins with billing data:
    executed actions (the audit trail), polled recovery actions, and the invoices push ledger."""
    with connect(warehouse.target) as con:
        counts = snapshot_mod.snapshot(ops_store.engine(), con)
    for name, n in counts.items():
        yield dg.MaterializeResult(asset_key=["ops_snapshot", name],
                                   metadata={"dagster/row_count": n})


@dg.asset(
    key=["reconciliation", "monthly_parity"],
    group_name="reconciliation",
    kinds={"duckdb", "sql"},
    deps=_deps("reconciliation", "monthly_parity"),
)
def monthly_parity(warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Billing vs provider, per month and in total: invoice count, payment attempts, failed
    attempts (initial failures and failed retries), recovery outcomes (first-attempt success,
    paid after failure, unrecovered, refunded, voided, open), and invoices by currency and by
    country. One row per month, measure and key with both sides and the difference; the checks
    on this table say whether the two systems agree (within the configured tolerances)."""
    with connect(warehouse.target) as con:
        n = sqlrun.materialize(con, "reconciliation", "monthly_parity")
        diff = con.execute(
            "select count(*) from reconciliation.monthly_parity "
            "where provider_reports and difference <> 0 and month <> 'total'").fetchone()[0]
        preview = _preview(con, "reconciliation.monthly_parity where month = 'total' and dimension in "
                           "('total', 'outcome')", "measure, key")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": n, "rows_with_difference": diff,
        "totals": dg.MetadataValue.md(preview)})


@dg.asset(
    key=["reconciliation", "state_mismatches"],
    group_name="reconciliation",
    kinds={"duckdb", "sql"},
    deps=_deps("reconciliation", "state_mismatches"),
)
def state_mismatches(warehouse: WarehouseResource, reconciliation: ReconciliationConfig,
                     pipeline_settings: PipelineSettingsResource) -> dg.MaterializeResult:
    """Invoices on which billing and the provider disagree, with how long they have disagreed:
    the provider says recovered but billing is still open; a live retry was executed but no
    billing transaction followed; a recovery action passed its ideal retry time without being
    executed; billing changed the invoice after the provider last acknowledged it."""
    cfg = reconciliation.reconciliation_settings()
    params = {
        "as_of": datetime.now(UTC),
        "provider": reconciliation.provider_name(pipeline_settings.integration_file),
        "missed_grace_minutes": int(cfg.missed_action_grace_minutes),
        "executed_grace_minutes": int(cfg.executed_action_grace_minutes),
    }
    with connect(warehouse.target) as con:
        n = sqlrun.materialize(con, "reconciliation", "state_mismatches", params)
        by_kind = dict(con.execute("select kind, count(*) from reconciliation.state_mismatches "
                                   "group by kind").fetchall())
        preview = _preview(con, "reconciliation.state_mismatches", "age_hours desc")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": n, **{f"count_{k}": v for k, v in sorted(by_kind.items())},
        "oldest": dg.MetadataValue.md(preview)})
