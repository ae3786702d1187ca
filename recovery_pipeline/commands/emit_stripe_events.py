"""``recovery-pipeline emit-stripe-events``: the demo billing database's history as Stripe events.

Writes them as JSON lines (``--out``; ``ingest-stripe-events`` reads that file), and/or posts each
one signed with the Stripe webhook secret (``STRIPE_WEBHOOK_SECRET``, the loopback demo secret when
unset) to a receiver's ``POST /webhooks/stripe`` (``--deliver URL``). Offline Stripe for the demo.
"""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("emit-stripe-events",
                       help="emit the demo billing database's history as (signed) Stripe events")
    p.add_argument("--billing-db-url", help="SQLAlchemy URL of the billing database (default: settings)")
    p.add_argument("--out", type=Path, help="write the events as JSON lines to this file")
    p.add_argument("--deliver", metavar="RECEIVER_URL",
                   help="POST each event, signed, to RECEIVER_URL/webhooks/stripe")
    p.set_defaults(func=run)


def run(args) -> int:
    from collections import Counter

    import sqlalchemy as sa
    from rich.console import Console

    from recovery_pipeline.settings import SECRET_ENV_VARS, load_settings, secret
    from recovery_pipeline.stripe_connector.emit import deliver, emit_events

    console = Console()
    if not args.out and not args.deliver:
        console.print("[red]error:[/red] give --out FILE and/or --deliver RECEIVER_URL")
        return 2
    settings = load_settings()
    engine = sa.create_engine(args.billing_db_url or settings.billing_db_url)
    try:
        events = emit_events(engine)
    finally:
        engine.dispose()
    console.print(f"{len(events)} Stripe event(s): "
                  + ", ".join(f"{t} {n}" for t, n in sorted(Counter(e["type"] for e in events).items())))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", encoding="utf-8") as fh:
            for ev in events:
                fh.write(json.dumps(ev, separators=(",", ":")) + "\n")
        console.print(f"written to {args.out}")
    if args.deliver:
        codes = Counter(deliver(args.deliver, events, secret(SECRET_ENV_VARS["stripe_webhook_secret"])))
        console.print("delivered: " + ", ".join(f"HTTP {c}: {n}" for c, n in sorted(codes.items())))
        if any(c >= 300 for c in codes):
            return 1
    return 0
