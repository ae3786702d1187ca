"""Pipeline health from the ops store (SQLite or Postgres through SQLAlchemy Core).

Webhook delivery success rate and processing latency, recovery-action backlog and actions missed
after their ideal retry time, API ingestion failures and retry volume, dead letters, polling state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from recovery_pipeline.opsstore import models as m
from recovery_pipeline.reconciliation.config import ReconciliationSettings


def _aware(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@dataclass(frozen=True)
class PollStatus:
    name: str
    last_success_at: datetime | None
    consecutive_failures: int
    stopped: bool
    reason: str


def pipeline_health(engine: sa.Engine, settings: ReconciliationSettings | None = None,
                    now: datetime | None = None, window_hours: float = 24.0) -> dict[str, float | int | None]:
    """Flat metric dict over the last ``window_hours`` (counts, rates, latency seconds)."""
    settings = settings or ReconciliationSettings()
    now = now or datetime.now(UTC)
    since = now - timedelta(hours=window_hours)
    missed_before = now - timedelta(minutes=settings.missed_action_grace_minutes)
    inbox, rej, ra, rl, dl = (m.webhook_inbox, m.webhook_rejections, m.recovery_actions,
                              m.request_log, m.dead_letters)
    count = sa.func.count()
    with engine.connect() as c:
        received = c.execute(sa.select(count).where(inbox.c.received_at >= since)).scalar_one()
        rejected = c.execute(sa.select(count).where(rej.c.received_at >= since)).scalar_one()
        by_status = dict(c.execute(sa.select(inbox.c.status, count).where(inbox.c.received_at >= since)
                                   .group_by(inbox.c.status)).all())
        latency_rows = c.execute(sa.select(inbox.c.received_at, inbox.c.processed_at).where(
            inbox.c.received_at >= since, inbox.c.processed_at.is_not(None))).all()
        backlog_actions = c.execute(sa.select(count).where(ra.c.status == "pending")).scalar_one()
        oldest_pending = c.execute(sa.select(sa.func.min(ra.c.polled_at))
                                   .where(ra.c.status == "pending")).scalar_one()
        missed = c.execute(sa.select(count).where(
            ra.c.status == "pending", ra.c.ideal_retry_time < missed_before)).scalar_one()
        inbox_backlog = c.execute(sa.select(count).where(inbox.c.status == "pending")).scalar_one()
        requests = c.execute(sa.select(
            count, sa.func.coalesce(sa.func.sum(rl.c.attempts - 1), 0),
            sa.func.coalesce(sa.func.sum(sa.case(
                ((rl.c.status_code >= 400) | rl.c.status_code.is_(None) | rl.c.error.is_not(None), 1),
                else_=0)), 0),
        ).where(rl.c.started_at >= since)).one()
        dead = c.execute(sa.select(count).where(dl.c.status == "dead")).scalar_one()
    lat = pd.Series([(_aware(p) - _aware(r)).total_seconds() for r, p in latency_rows], dtype="float64")
    total = received + rejected
    return {
        "webhooks_received": int(received),
        "webhooks_rejected": int(rejected),
        "webhook_success_rate": (received / total) if total else None,
        "webhooks_processed": int(by_status.get("processed", 0)),
        "webhooks_failed": int(by_status.get("failed", 0) + by_status.get("dead", 0)),
        "webhook_latency_p50_s": float(lat.quantile(0.5)) if len(lat) else None,
        "webhook_latency_p95_s": float(lat.quantile(0.95)) if len(lat) else None,
        "webhook_latency_max_s": float(lat.max()) if len(lat) else None,
        "inbox_backlog": int(inbox_backlog),
        "action_backlog": int(backlog_actions),
        "oldest_pending_action_age_h": (
            round((now - _aware(oldest_pending)).total_seconds() / 3600, 3) if oldest_pending else None),
        "actions_missed_after_ideal_time": int(missed),
        "api_requests": int(requests[0]),
        "api_retries": int(requests[1]),
        "api_failures": int(requests[2]),
        "dead_letters": int(dead),
    }


def poll_statuses(engine: sa.Engine, settings: ReconciliationSettings | None = None,
                  now: datetime | None = None) -> list[PollStatus]:
    """Each poller (poll_state row): stopped when its last success is older than the threshold
    or it failed too many times in a row."""
    settings = settings or ReconciliationSettings()
    now = now or datetime.now(UTC)
    stale_before = now - timedelta(minutes=settings.poll_stale_minutes)
    ps = m.poll_state
    out = []
    with engine.connect() as c:
        for row in c.execute(sa.select(ps)).mappings():
            last = _aware(row["last_success_at"])
            fails = int(row["consecutive_failures"] or 0)
            reasons = []
            if fails >= settings.poll_max_consecutive_failures:
                reasons.append(f"{fails} consecutive failures")
            if last is None or last < stale_before:
                reasons.append("no successful poll since "
                               f"{last.isoformat() if last else 'ever'}")
            out.append(PollStatus(row["name"], last, fails, bool(reasons), "; ".join(reasons)))
    return out


def ops_alert_conditions(engine: sa.Engine, settings: ReconciliationSettings | None = None,
                         now: datetime | None = None) -> dict[str, tuple[str, str]]:
    """Alert conditions read from the ops store: {incident key: (severity, message)}.

    ``polling_stopped:<name>`` for each stopped poller; ``dead_letters_piling_up`` when the number
    of dead letters reaches the threshold.
    """
    settings = settings or ReconciliationSettings()
    bad: dict[str, tuple[str, str]] = {}
    for p in poll_statuses(engine, settings, now):
        if p.stopped:
            bad[f"polling_stopped:{p.name}"] = ("ERROR", f"polling `{p.name}` stopped: {p.reason}")
    dl = m.dead_letters
    with engine.connect() as c:
        rows = c.execute(sa.select(dl.c.kind, sa.func.count()).where(dl.c.status == "dead")
                         .group_by(dl.c.kind)).all()
    total = sum(n for _, n in rows)
    if total >= settings.dead_letter_threshold:
        detail = ", ".join(f"{k}: {n}" for k, n in sorted(rows))
        bad["dead_letters_piling_up"] = (
            "ERROR", f"{total} dead letters (threshold {settings.dead_letter_threshold}; {detail}); "
                     "redrive them (oldest first) once the cause is fixed")
    return bad
