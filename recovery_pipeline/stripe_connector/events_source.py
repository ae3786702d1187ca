"""A dlt source over the Stripe object store: the billing rows that stored Stripe events imply.

``stripe_events_source(ops_store_url)`` yields four resources, ``customers``, ``subscriptions``,
``invoices`` and ``transactions``: Arrow tables with the columns of ``billing_engine/schema.py``
conformed to the raw contract (``_source='stripe_events'``, ``_month``, ``_loaded_at``, ...;
``conform=False`` gives exactly the schema columns), merged on the primary key. Point a dlt pipeline with
``dataset_name="billing_raw"`` at it to load the Stripe webhook path into the raw tables::

    pipeline.run(stripe_events_source(settings.ops_store_url))

Rows come from the store's final state (out-of-order safe). The first run emits every row; later
runs only the rows that objects stored since the previous run change (``stored_at`` cursor in dlt
source state, minus a lag), so the cost follows the change, not the history. ``process_pending``
(default on) first applies the receiver's pending Stripe inbox rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dlt

from recovery_pipeline.billing_engine import schema as billing_schema
from recovery_pipeline.stripe_connector.store import (
    build_rows,
    conformed_tables,
    dlt_columns,
    latest_stored_at,
    process_inbox,
    to_arrow,
)

SOURCE_NAME = "stripe_events"  # the rows' _source in billing_raw
# An object written by a transaction that committed after our read but stamped before it must not
# be missed: each run re-reads this much before the previous run's newest stored_at.
STORED_AT_LAG = timedelta(minutes=10)


@dlt.source(name="stripe_events", max_table_nesting=0)
def stripe_events_source(ops_store_url: str = dlt.config.value, process_pending: bool = True,
                         conform: bool = True, loaded_at: datetime | None = None):
    from recovery_pipeline.opsstore import create_ops_engine, init_ops_store

    engine = create_ops_engine(ops_store_url)
    init_ops_store(engine)
    cache: dict = {}
    loaded_at = loaded_at or datetime.now(UTC)

    def rows():
        if "rows" not in cache:
            if process_pending:
                while process_inbox(engine):
                    pass
            state = dlt.current.source_state()
            since = state.get("stored_since")
            high = latest_stored_at(engine)
            cache["rows"] = build_rows(engine, since=datetime.fromisoformat(since) if since else None)
            if high is not None:  # next run: what was stored since (minus a lag for late commits)
                state["stored_since"] = (high - STORED_AT_LAG).isoformat()
        return cache["rows"]

    def make(entity: str):
        @dlt.resource(name=entity, primary_key=billing_schema.PRIMARY_KEYS[entity],
                      write_disposition="merge", columns=dlt_columns(entity))
        def resource():
            found = rows().entity(entity)
            if not found:
                return
            if conform:
                yield from conformed_tables(entity, found, source=SOURCE_NAME, loaded_at=loaded_at)
            else:
                yield to_arrow(entity, found)

        return resource

    return [make(e) for e in ("customers", "subscriptions", "invoices", "transactions")]
