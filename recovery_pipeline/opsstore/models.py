"""Tables of the operational store.

Every table lives on one ``metadata`` so ``init_ops_store`` creates them all. Dedupe is always a
unique constraint (insert-or-ignore), never exists-then-insert, so it holds with several writer
processes (receiver replicas, Dagster runs) sharing the store.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
TS = sa.DateTime(timezone=True)

# --- inbound: provider webhooks and Stripe events -------------------------------------------
webhook_inbox = sa.Table(
    "webhook_inbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),  # slicker | revtain | butter | standard | stripe
    sa.Column("event_id", sa.String(255), nullable=False),
    sa.Column("event_type", sa.String(128)),
    sa.Column("received_at", TS, nullable=False),
    sa.Column("headers_json", sa.Text, nullable=False),  # auth/signature headers redacted
    sa.Column("body", sa.Text, nullable=False),  # raw payload as received (verified)
    # pending | processed | skipped | failed | dead
    sa.Column("status", sa.String(16), nullable=False, default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("processed_at", TS),
    sa.UniqueConstraint("provider", "event_id", name="uq_inbox_provider_event"),
    sa.Index("ix_inbox_status", "status", "id"),
)

# Every rejected inbound request (bad signature, stale, malformed, too large), for alerting.
webhook_rejections = sa.Table(
    "webhook_rejections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(255), nullable=False),
    sa.Column("received_at", TS, nullable=False),
)

# --- outbound: pushes and hand-offs to the provider -------------------------------------------
push_ledger = sa.Table(
    "push_ledger",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("entity", sa.String(32), primary_key=True),  # subscriptions | invoices | transactions
    sa.Column("record_id", sa.String(64), primary_key=True),
    sa.Column("payload_hash", sa.String(64), nullable=False),  # hash of the wire payload last acked
    sa.Column("month", sa.String(7)),  # YYYY-MM of the record's created_at (reconciliation stand-in)
    sa.Column("pushed_at", TS, nullable=False),
    sa.Column("request_id", sa.String(128)),
)

payloads = sa.Table(
    "payloads",
    metadata,
    sa.Column("ref", sa.String(64), primary_key=True),  # sha256 of the body
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

request_log = sa.Table(
    "request_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("endpoint", sa.String(255), nullable=False),
    sa.Column("batch_id", sa.String(128)),
    sa.Column("request_id", sa.String(128)),  # the provider's request id
    sa.Column("status_code", sa.Integer),
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("records", sa.Integer, nullable=False, default=0),
    sa.Column("payload_ref", sa.String(64)),
    sa.Column("error", sa.Text),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS),
)

handoffs = sa.Table(
    "handoffs",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("idempotency_key", sa.String(128), primary_key=True),  # the invoice id
    sa.Column("invoice_id", sa.String(64), nullable=False),
    sa.Column("transaction_id", sa.String(64)),
    # pending | accepted | queued | blocked | duplicate | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("provider_transaction_id", sa.String(128)),
    sa.Column("card_update_url", sa.Text),
    sa.Column("response_json", sa.Text),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),  # push | handoff | event
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("entity", sa.String(32)),  # subscriptions | invoices | transactions | event type
    sa.Column("ref", sa.String(255)),  # batch id or inbox event id
    sa.Column("payload_ref", sa.String(64)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default="dead"),  # dead | redriven
    sa.Column("redriven_at", TS),
    sa.UniqueConstraint("kind", "provider", "ref", name="uq_dead_letter_ref"),
)

# --- decisions: polled recovery actions, execution audit trail, review --------------------------
recovery_actions = sa.Table(
    "recovery_actions",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("action_id", sa.String(128), primary_key=True),  # the provider's requestId
    sa.Column("invoice_id", sa.String(64)),
    sa.Column("subscription_id", sa.String(64)),
    sa.Column("transaction_id", sa.String(64)),
    sa.Column("action_suggestion", sa.String(64)),
    sa.Column("ideal_retry_time", TS),
    sa.Column("created_at", TS),
    sa.Column("polled_at", TS, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
)

poll_state = sa.Table(
    "poll_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("cursor", sa.Text),
    sa.Column("last_success_at", TS),
    sa.Column("last_attempt_at", TS),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
)

executed_actions = sa.Table(
    "executed_actions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(16), nullable=False),  # webhook | poll | handoff
    sa.Column("source_event_id", sa.String(255), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("invoice_id", sa.String(64)),
    sa.Column("subscription_id", sa.String(64)),
    sa.Column("customer_id", sa.String(64)),
    sa.Column("instruction", sa.String(128), nullable=False),  # what the provider said
    sa.Column("business_action", sa.String(64), nullable=False),  # retry_now | request_payment_method_update | ...
    sa.Column("mode", sa.String(16), nullable=False),  # shadow | live | paused
    sa.Column("received_at", TS, nullable=False),
    sa.Column("executed_at", TS),
    sa.Column("before_state", sa.Text),
    sa.Column("after_state", sa.Text),
    sa.Column("result", sa.String(32), nullable=False),  # executed | shadowed | failed | review | ...
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("detail", sa.Text),
    sa.UniqueConstraint("provider", "source_event_id", name="uq_executed_source_event"),
)

manual_review = sa.Table(
    "manual_review",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("source_event_id", sa.String(255), nullable=False),
    sa.Column("invoice_id", sa.String(64)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("resolved_at", TS),
    sa.UniqueConstraint("provider", "source_event_id", name="uq_review_source_event"),
)

control_flags = sa.Table(
    "control_flags",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # e.g. kill_switch
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("updated_by", sa.String(128)),
)

# --- alerting ------------------------------------------------------------------------------------
alert_incidents = sa.Table(
    "alert_incidents",
    metadata,
    sa.Column("incident_key", sa.String(255), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # firing | resolved
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("first_fired_at", TS, nullable=False),
    sa.Column("last_seen_at", TS, nullable=False),
    sa.Column("resolved_at", TS),
)

# Tables of other packages defined on this metadata (imported last so init_ops_store creates them).
import recovery_pipeline.stripe_connector.models  # noqa: E402,F401
