"""``recovery-pipeline replay``: mark stored webhook events pending again so processing re-runs them.

Safe: processing is idempotent downstream (``executed_actions`` is unique per source event).
"""

from __future__ import annotations

from datetime import UTC, datetime


def _iso(value: str) -> datetime:
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def register(sub) -> None:
    p = sub.add_parser("replay", help="re-run stored webhook events (by time range, event id, provider)")
    p.add_argument("--since", type=_iso, help="received at or after (ISO 8601, UTC when no offset)")
    p.add_argument("--until", type=_iso, help="received before (ISO 8601)")
    p.add_argument("--event-id", action="append", dest="event_ids", default=[], help="repeatable")
    p.add_argument("--provider", help="slicker | revtain | butter | standard | stripe")
    p.add_argument("--dry-run", action="store_true", help="print the selection, change nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    from recovery_pipeline.opsstore.store import create_ops_engine, init_ops_store
    from recovery_pipeline.settings import load_settings
    from recovery_pipeline.webhooks.inbox import mark_pending, select_for_replay

    settings = load_settings()
    engine = create_ops_engine(settings.ops_store_url)
    try:
        init_ops_store(engine)
        try:
            rows = select_for_replay(engine, since=args.since, until=args.until,
                                     event_ids=args.event_ids, provider=args.provider)
        except ValueError as exc:
            print(f"replay: {exc}")
            return 2
        for r in rows:
            print(f"{r['provider']}\t{r['event_id']}\t{r['event_type'] or '-'}\t"
                  f"{r['received_at']}\t{r['status']}")
        if args.dry_run:
            print(f"{len(rows)} event(s) selected (dry run: nothing changed)")
            return 0
        n = mark_pending(engine, [r["id"] for r in rows])
        print(f"{len(rows)} event(s) selected, {n} marked pending for re-processing")
        return 0
    finally:
        engine.dispose()
