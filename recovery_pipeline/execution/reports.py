"""Summaries of the inbox, the polled actions and the audit trail, for asset metadata and the CLI.

Previews never carry payload bodies, headers or secrets; anything that looks like an email address
is masked (``j***@example.com``).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from recovery_pipeline.opsstore.models import (
    dead_letters,
    executed_actions,
    manual_review,
    recovery_actions,
    webhook_inbox,
)

EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def mask_emails(value: Any) -> Any:
    if isinstance(value, str):
        return EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", value)
    if isinstance(value, dict):
        return {k: mask_emails(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_emails(v) for v in value]
    return value


def _iso(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


def _grouped(conn: sa.Connection, table: sa.Table, cols: list[str], where=None) -> list[dict[str, Any]]:
    q = sa.select(*[table.c[c] for c in cols], sa.func.count().label("n")).group_by(
        *[table.c[c] for c in cols]).order_by(*[table.c[c] for c in cols])
    if where is not None:
        q = q.where(where)
    return [dict(r._mapping) for r in conn.execute(q)]


def _preview(conn: sa.Connection, table: sa.Table, cols: list[str], order, limit: int) -> list[dict]:
    rows = conn.execute(sa.select(*[table.c[c] for c in cols]).order_by(order).limit(limit))
    return [mask_emails({k: _iso(v) for k, v in r._mapping.items()}) for r in rows]


def inbox_summary(engine: sa.Engine, preview: int = 10) -> dict[str, Any]:
    """Counts by provider / event type / status, and the latest events (no bodies)."""
    with engine.connect() as conn:
        groups = _grouped(conn, webhook_inbox, ["provider", "event_type", "status"])
        latest = _preview(conn, webhook_inbox, ["id", "provider", "event_id", "event_type", "status",
                                                "attempts", "received_at", "last_error"],
                          webhook_inbox.c.id.desc(), preview)
    by_status: dict[str, int] = {}
    for g in groups:
        by_status[g["status"]] = by_status.get(g["status"], 0) + g["n"]
    return {"total": sum(g["n"] for g in groups), "by_status": by_status, "groups": groups,
            "preview": latest}


def polled_summary(engine: sa.Engine, preview: int = 10) -> dict[str, Any]:
    with engine.connect() as conn:
        groups = _grouped(conn, recovery_actions, ["provider", "action_suggestion", "status"])
        latest = _preview(conn, recovery_actions, ["provider", "action_id", "invoice_id", "action_suggestion",
                                                   "ideal_retry_time", "status", "attempts", "polled_at"],
                          recovery_actions.c.polled_at.desc(), preview)
    by_status: dict[str, int] = {}
    for g in groups:
        by_status[g["status"]] = by_status.get(g["status"], 0) + g["n"]
    return {"total": sum(g["n"] for g in groups), "by_status": by_status, "groups": groups,
            "preview": latest}


def audit_summary(engine: sa.Engine, preview: int = 10) -> dict[str, Any]:
    """The audit trail: counts by business action / mode / result, open reviews, dead events."""
    with engine.connect() as conn:
        groups = _grouped(conn, executed_actions, ["business_action", "mode", "result"])
        latest = _preview(conn, executed_actions, [
            "id", "provider", "source", "source_event_id", "invoice_id", "customer_id", "instruction",
            "business_action", "mode", "result", "attempts", "received_at", "executed_at", "detail"],
            executed_actions.c.id.desc(), preview)
        open_reviews = conn.execute(sa.select(sa.func.count()).select_from(manual_review)
                                    .where(manual_review.c.resolved_at.is_(None))).scalar_one()
        dead = conn.execute(sa.select(sa.func.count()).select_from(dead_letters).where(
            dead_letters.c.kind == "event", dead_letters.c.status == "dead")).scalar_one()
    by = {"action": {}, "mode": {}, "result": {}}
    for g in groups:
        for dim, col in (("action", "business_action"), ("mode", "mode"), ("result", "result")):
            by[dim][g[col]] = by[dim].get(g[col], 0) + g["n"]
    return {"total": sum(g["n"] for g in groups), "by_action": by["action"], "by_mode": by["mode"],
            "by_result": by["result"], "open_manual_reviews": open_reviews,
            "dead_lettered_events": dead, "preview": latest}
