"""Assets of the ``provider_sync`` group: what the recovery provider has been sent."""


import contextlib
from collections.abc import Iterator

import dagster as dg

from recovery_pipeline.resources import (
    BillingEngineResource,
    OpsStoreResource,
    ProviderResource,
    WarehouseResource,
)

GROUP = "provider_sync"
KINDS = {"python", "duckdb"}
PUSHED = {e: dg.AssetKey([GROUP, f"pushed_{e}"]) for e in ("subscriptions", "invoices", "transactions")}
FAILURE_HANDOFFS = dg.AssetKey([GROUP, "failure_handoffs"])


@contextlib.contextmanager
def _reader(warehouse: WarehouseResource, chunk_rows: int = 10_000) -> Iterator:
    from recovery_pipeline.providers.push import iter_canonical_duckdb, iter_canonical_sqlalchemy

    if warehouse.is_postgres:
        engine = warehouse.sqlalchemy_engine()
        try:
            yield lambda entity: iter_canonical_sqlalchemy(engine, entity, chunk_rows)
        finally:
            engine.dispose()
    else:
        with warehouse.duckdb(read_only=True) as con:
            yield lambda entity: iter_canonical_duckdb(con, entity, chunk_rows)


def _push(context: dg.AssetExecutionContext, entity: str, provider: ProviderResource,
          warehouse: WarehouseResource, ops_store: OpsStoreResource) -> dg.MaterializeResult:
    from recovery_pipeline.providers.push import push_entity

    opts = provider.options()
    with opts.client() as client, _reader(warehouse) as read:
        stats = push_entity(ops_store.engine(), client, entity, read(entity), opts.push_settings())
    context.log.info(f"{opts.provider} {entity}: sent {stats.records_sent} of {stats.rows_read} rows "
                     f"({stats.unchanged} unchanged) in {stats.requests} requests, "
                     f"{stats.throttled} 429s, {stats.dead_letters} dead letters")
    return dg.MaterializeResult(metadata={
        "provider": opts.provider,
        "rows_read": stats.rows_read,
        "records_sent": stats.records_sent,
        "unchanged": stats.unchanged,
        "not_applicable": stats.not_applicable,
        "refused_card_numbers": stats.refused,
        "batches": stats.batches,
        "requests": stats.requests,
        "retries": stats.retries,
        "429s": stats.throttled,
        "dead_letters": stats.dead_letters,
        "dead_lettered_records": stats.dead_lettered_records,
        "request_ids": dg.MetadataValue.json(stats.request_ids),
        "preview": dg.MetadataValue.json(stats.preview),
    })


@dg.asset(key=PUSHED["subscriptions"], group_name=GROUP, kinds=KINDS,
          deps=[dg.AssetKey(["canonical", "subscriptions"])])
def pushed_subscriptions(context: dg.AssetExecutionContext, provider: ProviderResource,
                         warehouse: WarehouseResource, ops_store: OpsStoreResource):
    """Subscriptions the recovery provider holds. Only new or changed ones are sent (the push
    ledger remembers what the provider acknowledged), in batches within its limits; they go
    first because invoices and transactions refer to them."""
    return _push(context, "subscriptions", provider, warehouse, ops_store)


@dg.asset(key=PUSHED["invoices"], group_name=GROUP, kinds=KINDS,
          deps=[dg.AssetKey(["canonical", "invoices"]), PUSHED["subscriptions"]])
def pushed_invoices(context: dg.AssetExecutionContext, provider: ProviderResource,
                    warehouse: WarehouseResource, ops_store: OpsStoreResource):
    """Invoices the recovery provider holds (paid / unpaid), new or changed since the last
    acknowledged push; sent after their subscriptions."""
    return _push(context, "invoices", provider, warehouse, ops_store)


@dg.asset(key=PUSHED["transactions"], group_name=GROUP, kinds=KINDS,
          deps=[dg.AssetKey(["canonical", "transactions"]), PUSHED["invoices"]])
def pushed_transactions(context: dg.AssetExecutionContext, provider: ProviderResource,
                        warehouse: WarehouseResource, ops_store: OpsStoreResource):
    """Every payment attempt (failed and successful) the provider holds: the evidence it learns
    from. New or changed attempts only, after their invoices."""
    return _push(context, "transactions", provider, warehouse, ops_store)


class HandoffConfig(dg.Config):
    """Which failed transactions to hand off (the sensor fills this); empty: every failed
    transaction of an open invoice (already handed-off invoices are skipped by the ledger)."""

    transaction_ids: list[str] = []


@dg.asset(key=FAILURE_HANDOFFS, group_name=GROUP, kinds={"python", "duckdb"},
          deps=[dg.AssetKey(["canonical", "transactions"]), dg.AssetKey(["canonical", "invoices"])])
def failure_handoffs(context: dg.AssetExecutionContext, config: HandoffConfig,
                     provider: ProviderResource, warehouse: WarehouseResource,
                     ops_store: OpsStoreResource, billing_engine: BillingEngineResource):
    """Failed charges handed to the recovery provider the moment they land: pushed (Slicker,
    Butter) or executed (Revtain, idempotency key = invoice id). Each invoice is handed off at
    most once, even across crashes and re-runs; blocked (403) and duplicate (409) are outcomes.
    Handed-off invoices are marked in the billing system so its own retries stop."""
    from recovery_pipeline.providers.handoff import billing_marker, handoff_failures
    from recovery_pipeline.providers.source import (
        failures_by_id_duckdb,
        new_failures_duckdb,
        new_failures_sql,
    )
    from recovery_pipeline.settings import SECRET_ENV_VARS, secret

    opts = provider.options()
    if warehouse.is_postgres:
        rows = new_failures_sql(warehouse.sqlalchemy_engine(), None, None, 1_000_000)
        if config.transaction_ids:
            wanted = set(config.transaction_ids)
            rows = [r for r in rows if r["transaction_id"] in wanted]
    else:
        with warehouse.duckdb(read_only=True) as con:
            rows = (failures_by_id_duckdb(con, config.transaction_ids) if config.transaction_ids
                    else new_failures_duckdb(con, None, None, 1_000_000))
    mark = billing_marker(billing_engine.base_url,
                          billing_engine.api_key or secret(SECRET_ENV_VARS["billing_engine_api_key"]))
    with opts.client() as client:
        stats = handoff_failures(ops_store.engine(), client, rows, mark_handed_off=mark,
                                 push_settings=opts.push_settings())
    return dg.MaterializeResult(metadata={
        "provider": opts.provider,
        "failed_transactions": len(rows),
        "invoices_considered": stats.considered,
        "sent": stats.sent,
        "already_handed_off": stats.already_done,
        "outcomes": dg.MetadataValue.json(stats.outcomes),
        "requests": stats.requests,
        "dead_letters": stats.dead_letters,
        "billing_marked": stats.billing_marked,
        "billing_errors": stats.billing_errors,
        "preview": dg.MetadataValue.json(stats.preview),
    })
