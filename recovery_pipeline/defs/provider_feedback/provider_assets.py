"""What the provider holds, by month: the provider side of reconciliation."""

import httpx

import dagster as dg

from recovery_pipeline.reconciliation import provider_view
from recovery_pipeline.reconciliation.warehouse_con import connect
from recovery_pipeline.resources import (
    OpsStoreResource,
    PipelineSettingsResource,
    ReconciliationConfig,
    WarehouseResource,
)


@dg.asset(
    key=["provider", "counts"],
    group_name="provider_feedback",
    kinds={"duckdb", "python"},
)
def provider_counts(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    ops_store: OpsStoreResource,
    reconciliation: ReconciliationConfig,
    pipeline_settings: PipelineSettingsResource,
) -> dg.MaterializeResult:
    """What the recovery provider says it holds, month by month: invoices, payment attempts,
    failed attempts, invoices by currency and by country, and recovery outcomes.

    Read from the provider's counts endpoint (the sandbox's ``GET /sandbox/counts``). Providers
    without one are represented by the push ledger: the records they acknowledged, by month
    (record counts only; the other measures then show as "not reported" in parity).
    Table ``provider.counts``: month, measure, dimension, key, value, source, fetched_at.
    """
    mode = reconciliation.provider_counts_source
    provider = reconciliation.provider_name(pipeline_settings.integration_file)
    rows, note = None, ""
    if mode in ("sandbox_counts", "auto"):
        try:
            rows = provider_view.fetch_sandbox_counts(reconciliation.provider_base_url)
        except (httpx.HTTPError, provider_view.CountsPayloadError) as exc:
            if mode == "sandbox_counts":
                raise
            note = f"counts endpoint unavailable ({type(exc).__name__}); using the push ledger"
            context.log.warning(note)
    elif mode != "push_ledger":
        raise ValueError(f"provider_counts_source must be sandbox_counts, push_ledger or auto, not {mode!r}")
    if rows is None:
        rows = provider_view.ledger_counts(ops_store.engine(), provider)
    with connect(warehouse.target) as con:
        frame = provider_view.write_provider_counts(con, rows)
    source = frame["source"].iloc[0] if len(frame) else ("push_ledger" if note or mode == "push_ledger"
                                                         else "sandbox_counts")
    totals = frame[frame["dimension"] == "total"].pivot_table(
        index="month", columns="measure", values="value", aggfunc="sum").reset_index() if len(frame) else frame
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(frame),
        "source": source,
        "provider": provider,
        "months": int(frame["month"].nunique()) if len(frame) else 0,
        "note": note or "ok",
        "preview": dg.MetadataValue.md(totals.head(24).to_markdown(index=False) if len(totals) else "(empty)"),
    })
