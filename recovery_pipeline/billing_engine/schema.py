"""Schema of the demo billing engine's SQL database.

This is also the column contract of the *billing export* (one folder per entity, CSV / Parquet /
JSONL files with exactly these columns) and of the raw warehouse tables loaded from either.

Conventions: money in integer minor units (``amount_minor``) plus an ISO-4217 ``currency``;
timestamps are timezone-aware UTC; ``updated_at`` moves on every change (the incremental cursor).
Currency codes are stored UPPERCASE ISO-4217 (``"USD"``, ``"JPY"``) everywhere: database, exports,
canonical tables; zero-decimal currencies (JPY) carry whole units in ``amount_minor``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

TS = sa.DateTime(timezone=True)

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("customer_id", sa.String(64), primary_key=True),
    sa.Column("email", sa.String(255)),
    sa.Column("country", sa.String(2)),  # ISO-3166 alpha-2
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False, index=True),
)

subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("subscription_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("plan_id", sa.String(64), nullable=False),
    # active | past_due | paused | canceled | expired | trialing
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3)),
    sa.Column("billing_period", sa.Integer, nullable=False),  # e.g. 1
    sa.Column("billing_period_unit", sa.String(8), nullable=False),  # month | year
    sa.Column("business_entity", sa.String(64)),
    sa.Column("activated_at", TS),
    sa.Column("canceled_at", TS),
    sa.Column("expires_at", TS),
    sa.Column("dunning_complete_at", TS),  # end of dunning reached (provider instruction or metadata)
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False, index=True),
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("invoice_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False, index=True),
    sa.Column("subscription_id", sa.String(64), index=True),
    # open | paid | uncollectible | void | refunded
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3)),
    sa.Column("business_entity", sa.String(64)),
    sa.Column("attempt_count", sa.Integer, nullable=False, default=0),
    sa.Column("due_at", TS),
    sa.Column("paid_at", TS),
    sa.Column("collection_paused", sa.Boolean, nullable=False, default=False),
    sa.Column("dunning_complete_at", TS),
    # set when the invoice was handed off to the provider: the billing engine's own retries stop
    sa.Column("handed_off_at", TS),
    sa.Column("payment_method_update_requested_at", TS),
    sa.Column("created_at", TS, nullable=False, index=True),
    sa.Column("updated_at", TS, nullable=False, index=True),
)

transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("transaction_id", sa.String(64), primary_key=True),
    sa.Column("invoice_id", sa.String(64), nullable=False, index=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("subscription_id", sa.String(64)),
    # succeeded | failed | refunded
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3)),
    sa.Column("attempt_number", sa.Integer, nullable=False),  # 1 = first attempt, 2.. = retries
    sa.Column("gateway", sa.String(32), nullable=False),  # e.g. stripe, adyen, braintree
    sa.Column("gateway_transaction_id", sa.String(64), nullable=False),
    sa.Column("gateway_status", sa.String(32)),
    sa.Column("decline_code", sa.String(64)),  # Stripe-style decline code, null on success
    sa.Column("decline_message", sa.String(255)),
    sa.Column("payment_method_type", sa.String(32)),  # card | sepa_debit | ...
    sa.Column("payment_method_token", sa.String(64)),  # a gateway token (pm_...), never a card number
    sa.Column("card_brand", sa.String(32)),
    sa.Column("card_bin", sa.String(8)),  # first 6 digits only
    sa.Column("card_fingerprint", sa.String(64)),
    sa.Column("card_country", sa.String(2)),
    sa.Column("created_at", TS, nullable=False, index=True),
    sa.Column("updated_at", TS, nullable=False, index=True),
)

ENTITIES: dict[str, sa.Table] = {
    "customers": customers,
    "subscriptions": subscriptions,
    "invoices": invoices,
    "transactions": transactions,
}
PRIMARY_KEYS = {name: [c.name for c in t.primary_key.columns][0] for name, t in ENTITIES.items()}
# Dependency order for syncing to a provider (customers travel inside subscriptions).
SYNC_ORDER = ("subscriptions", "invoices", "transactions")

SUBSCRIPTION_STATES = {"active", "past_due", "paused", "canceled", "expired", "trialing"}
INVOICE_STATES = {"open", "paid", "uncollectible", "void", "refunded"}
TRANSACTION_STATES = {"succeeded", "failed", "refunded"}
