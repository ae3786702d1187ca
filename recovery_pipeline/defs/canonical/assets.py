"""Group ``canonical``: one asset per ``dbt_like_sql/canonical/*.sql`` model, monthly partitions.

Dependencies come from the SQL (sqlglot table references -> asset keys). Materializing a partition
replaces that month's rows (delete + insert in one transaction): re-running a month is idempotent.
A run over a partition range (single-run backfill policy) is one set-based pass per model.
The SQL files are part of the package's source (read like code when the definitions are built).
"""

import warnings
from datetime import UTC, datetime

import dagster as dg

from recovery_pipeline.defs.billing_exports.partitions import monthly_partitions
from recovery_pipeline.ingest.months import partition_to_month
from recovery_pipeline.resources import WarehouseResource
from recovery_pipeline.sqlmodels.runner import (
    SqlModel,
    discover,
    markdown_preview,
    materialize_range,
    prepare,
)
from recovery_pipeline.sqlmodels.runner import warehouse as open_warehouse

# single-run backfill policy (one dlt load for a UI backfill range) is marked beta in 1.13
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)

PREVIEW_COLUMNS = {
    "subscriptions": ["subscription_id", "status", "amount_minor", "currency", "customer_country"],
    "invoices": ["invoice_id", "status", "amount_minor", "currency", "customer_country", "created_at"],
    "transactions": ["transaction_id", "invoice_id", "status", "decline_code", "amount_minor",
                     "currency"],
    "invoice_outcomes": ["invoice_id", "status", "outcome", "attempts", "failed_attempts",
                         "recovered_amount_minor", "currency"],
    "quarantine": ["entity", "record_id", "reason", "detail"],
}


def _group_counts(wh, table: str, column: str, months: list[str]) -> dict[str, int]:
    rows = wh.fetchall(f"select {column}, count(*) from {table} "
                       f"where month >= $first and month <= $last "
                       f"group by {column} order by {column}", {"first": months[0], "last": months[-1]})
    return {str(k): int(v) for k, v in rows}


def _extra_metadata(wh, model: SqlModel, months: list[str]) -> dict:
    md: dict = {}
    if model.name == "quarantine":
        md["quarantined_by_reason"] = dg.MetadataValue.json(
            _group_counts(wh, model.table, "reason", months))
        md["quarantined_by_entity"] = dg.MetadataValue.json(
            _group_counts(wh, model.table, "entity", months))
    elif model.name == "invoice_outcomes":
        md["outcomes"] = dg.MetadataValue.json(_group_counts(wh, model.table, "outcome", months))
        recovered = wh.fetchall(
            f"select currency, sum(recovered_amount_minor) from {model.table} "
            "where month >= $first and month <= $last and outcome = 'paid_after_failure' "
            "group by currency order by currency", {"first": months[0], "last": months[-1]})
        md["recovered_amount_minor_by_currency"] = dg.MetadataValue.json(
            {str(c): int(v or 0) for c, v in recovered})
    elif model.name in ("invoices", "subscriptions", "transactions"):
        md["by_status"] = dg.MetadataValue.json(_group_counts(wh, model.table, "status", months))
        md["by_currency"] = dg.MetadataValue.json(_group_counts(wh, model.table, "currency", months))
    return md


def build_canonical_asset(model: SqlModel) -> dg.AssetsDefinition:
    @dg.asset(
        key=[model.schema, model.name],
        deps=[dg.AssetKey(list(d)) for d in model.deps],
        group_name="canonical",
        kinds={"sql", "duckdb"},
        partitions_def=monthly_partitions,
        description=model.description,
        metadata={"sql_file": str(model.path.relative_to(model.path.parents[2])),
                  "dagster/table_name": model.table},
        pool="warehouse",
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def _canonical(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        months = [partition_to_month(k) for k in context.partition_keys]
        as_of = datetime.now(UTC)
        with open_warehouse(warehouse.target) as wh:
            prepare(wh)
            everything = materialize_range(wh, model, months, as_of=as_of)
            results = [r for r in everything if not r.extra.get("dependent")]
            dependents = [r for r in everything if r.extra.get("dependent")]
            month = months[-1]
            metadata = {
                # earlier months refreshed because this range changed them (a retry of an
                # invoice of month M landing in M+1 changes M's outcome)
                "dependent_months_refreshed": dg.MetadataValue.json(
                    {r.month: r.rows for r in dependents}),
                "dagster/row_count": dg.MetadataValue.int(sum(r.rows for r in results)),
                "rows_by_month": dg.MetadataValue.json({r.month: r.rows for r in results}),
                "rows_replaced": dg.MetadataValue.int(sum(r.deleted for r in results)),
                "seconds": dg.MetadataValue.float(round(sum(r.seconds for r in results), 3)),
                **_extra_metadata(wh, model, months),
                "preview": dg.MetadataValue.md(markdown_preview(
                    wh, model.table, month, PREVIEW_COLUMNS.get(model.name))),
            }
        return dg.MaterializeResult(metadata=metadata)

    return _canonical


CANONICAL_MODELS = discover(schema="canonical")
canonical_assets = [build_canonical_asset(m) for m in CANONICAL_MODELS]
