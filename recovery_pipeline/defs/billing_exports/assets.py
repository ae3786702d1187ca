"""Raw billing data, loaded by dlt into ``billing_raw`` (one partition = one month).

Plain ``@dg.multi_asset`` running the dlt pipeline of ``recovery_pipeline.ingest`` (see
ARCHITECTURE.md "Ingestion" for why not ``@dlt_assets``): the source (export drop folder or SQL
billing database) is chosen at run time from integration.yaml / ``RECOVERY_SOURCE_KIND``.
"""

import warnings

import dagster as dg

from recovery_pipeline.defs.billing_exports.partitions import monthly_partitions
from recovery_pipeline.ingest.months import partition_to_month
from recovery_pipeline.ingest.pipeline import load_raw
from recovery_pipeline.integration import load_integration
from recovery_pipeline.resources import (
    BillingDatabaseResource,
    OpsStoreResource,
    PipelineSettingsResource,
    WarehouseResource,
)
from recovery_pipeline.sqlmodels.runner import markdown_preview, prepare
from recovery_pipeline.sqlmodels.runner import warehouse as open_warehouse

# single-run backfill policy (one dlt load for a UI backfill range) is marked beta in 1.13
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)

RAW_DESCRIPTIONS = {
    "customers": "Customers as the billing system exports them (country drives coverage checks).",
    "subscriptions": "Subscriptions as exported by the billing system: plan, price, period, state.",
    "invoices": "Invoices as exported by the billing system, every version received (append from "
                "files, merge on invoice_id from the billing database).",
    "transactions": "Every payment attempt, failed and successful, as the billing system exports "
                    "it; retries are separate rows. Card-number-like values are masked on load.",
}
PREVIEW_COLUMNS = {
    "customers": ["customer_id", "country", "created_at", "_source"],
    "subscriptions": ["subscription_id", "status", "amount_minor", "currency", "_source"],
    "invoices": ["invoice_id", "status", "amount_minor", "currency", "created_at", "_source"],
    "transactions": ["transaction_id", "invoice_id", "status", "decline_code", "amount_minor",
                     "currency", "_source"],
}

RAW_SPECS = [
    dg.AssetSpec(
        key=["billing_raw", entity],
        group_name="billing_exports",
        kinds={"dlt", "duckdb"},
        description=RAW_DESCRIPTIONS[entity],
        partitions_def=monthly_partitions,
        metadata={"dagster/table_name": f"billing_raw.{entity}"},
    )
    for entity in ("customers", "subscriptions", "invoices", "transactions")
]


@dg.multi_asset(specs=RAW_SPECS, name="billing_raw_load", partitions_def=monthly_partitions,
                pool="warehouse", backfill_policy=dg.BackfillPolicy.single_run())
def billing_raw_load(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    billing_db: BillingDatabaseResource,
    pipeline_settings: PipelineSettingsResource,
    ops_store: OpsStoreResource,
):
    """Load the partition's month(s) of billing data into ``billing_raw`` with dlt (only what is new).

    A UI backfill runs the whole range in one run (single-run backfill policy): one dlt load.
    """
    months = [partition_to_month(k) for k in context.partition_keys]
    cfg = load_integration(pipeline_settings.integration_file)
    kind = cfg.source_kind()
    if kind == "stripe":
        summary = _load_stripe(months, warehouse, pipeline_settings, ops_store)
    else:
        summary = load_raw(
            kind, months, warehouse=warehouse.target, data_dir=pipeline_settings.data_dir,
            exports_dir=pipeline_settings.exports_dir, billing_db_url=billing_db.url,
            primary_keys=cfg.canonical_ids, formats=tuple(cfg.source.formats),
        )
    context.log.info(f"{kind}: loaded {summary.total_rows} rows for {', '.join(months)} in "
                     f"{summary.seconds:.1f}s")
    with open_warehouse(warehouse.target) as wh:
        prepare(wh)
        for spec in RAW_SPECS:
            entity = spec.key.path[-1]
            in_month = invalid = card_like = 0
            for month in months:
                n, bad, card = wh.fetchall(
                    f"select count(*), count(_invalid_columns), count(_card_like_columns) "
                    f"from billing_raw.{entity} where _month = $month", {"month": month})[0]
                in_month, invalid, card_like = in_month + n, invalid + bad, card_like + card
            yield dg.MaterializeResult(
                asset_key=spec.key,
                metadata={
                    "source_kind": kind,
                    "rows_loaded_this_run": dg.MetadataValue.int(summary.rows.get(entity, 0)),
                    "rows_in_month": dg.MetadataValue.int(int(in_month)),
                    "rows_with_unparseable_values": dg.MetadataValue.int(int(invalid)),
                    "rows_with_masked_card_numbers": dg.MetadataValue.int(int(card_like)),
                    "dlt_load_ids": ", ".join(summary.load_ids) or "(nothing new)",
                    "dagster/row_count": dg.MetadataValue.int(int(in_month)),
                    "preview": dg.MetadataValue.md(markdown_preview(
                        wh, f"billing_raw.{entity}", months[-1], PREVIEW_COLUMNS[entity],
                        month_column="_month")),
                },
            )


def _load_stripe(months, warehouse, pipeline_settings, ops_store):
    """Stripe as the billing source: the verified event store, plus the Stripe API (backfill by
    ``created`` range of the partition months) when ``STRIPE_API_KEY`` is set."""
    import os
    from datetime import UTC, datetime

    from recovery_pipeline.stripe_connector.raw_load import load_stripe_raw

    first, last = months[0], months[-1]
    start = datetime.strptime(first, "%Y-%m").replace(tzinfo=UTC)
    y, m = map(int, last.split("-"))
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
    return load_stripe_raw(
        warehouse=warehouse.target, data_dir=pipeline_settings.data_dir, ops_store_url=ops_store.url,
        api=bool(os.environ.get("STRIPE_API_KEY")),
        created_gte=int(start.timestamp()), created_lt=int(end.timestamp()),
    )
