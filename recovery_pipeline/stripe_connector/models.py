"""The Stripe object store, defined on the ops store's ``metadata`` so ``init_ops_store`` creates it.

``stripe_objects`` keeps the latest known state of each Stripe object (and of each invoice payment
attempt seen in events). A row is replaced only by a strictly newer version, ordered by
``(version_ts, version_rank, event_id)``: ``version_ts`` is the event's ``created`` (unix seconds),
``version_rank`` a per-object progress rank that breaks ties inside one second (a paid invoice
outranks an open one), ``event_id`` a last, arbitrary but deterministic tie-break. So an older event
never overwrites a newer state and any delivery order yields the same final state.
"""

from __future__ import annotations

import sqlalchemy as sa

from recovery_pipeline.opsstore.models import TS, metadata

stripe_objects = sa.Table(
    "stripe_objects",
    metadata,
    # customer | subscription | invoice | invoice_attempt | charge | payment_intent |
    # invoice_payment | source
    sa.Column("object_type", sa.String(32), primary_key=True),
    sa.Column("object_id", sa.String(255), primary_key=True),
    sa.Column("version_ts", sa.BigInteger, nullable=False),  # event created (unix seconds)
    sa.Column("version_rank", sa.Integer, nullable=False, default=0),
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("event_type", sa.String(128)),
    sa.Column("data_json", sa.Text, nullable=False),
    sa.Column("stored_at", TS, nullable=False),  # when this version was written (incremental reads)
    # links, denormalized from data_json at write time, so a change finds its related objects
    sa.Column("invoice_id", sa.String(255)),
    sa.Column("subscription_id", sa.String(255)),
    sa.Column("customer_id", sa.String(255)),
    sa.Column("payment_intent_id", sa.String(255)),
    sa.Index("ix_stripe_objects_version", "object_type", "version_ts"),
    sa.Index("ix_stripe_objects_stored_at", "stored_at"),
    sa.Index("ix_stripe_objects_invoice", "invoice_id"),
    sa.Index("ix_stripe_objects_subscription", "subscription_id"),
    sa.Index("ix_stripe_objects_customer", "customer_id"),
    sa.Index("ix_stripe_objects_payment_intent", "payment_intent_id"),
)
