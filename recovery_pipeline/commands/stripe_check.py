"""``recovery-pipeline stripe-check``: what must be true before launch on the Stripe path, and
which of it the data we hold verifies (Smart Retries off, webhook endpoint configured and
receiving, 7 days of events ingested with no retries, restricted key present, signing secret set).
Exit code 0 when nothing failed, 1 otherwise."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("stripe-check", help="Stripe path launch checks: verified / failed / cannot verify")
    p.add_argument("--ops-store-url", help="SQLAlchemy URL of the ops store (default: settings)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
    from recovery_pipeline.settings import load_settings
    from recovery_pipeline.stripe_connector.launch_checks import FAILED, VERIFIED, run_checks
    from recovery_pipeline.stripe_connector.store import event_span

    settings = load_settings()
    url = args.ops_store_url or settings.ops_store_url
    if url.startswith("sqlite") and not args.ops_store_url:
        settings.ensure_dirs()
    engine = create_ops_engine(url)
    init_ops_store(engine)
    checks = run_checks(engine)
    if args.json:
        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        first, last, n = event_span(engine)
        console = Console()
        table = Table(title="Stripe path: before launch")
        for col in ("check", "result", "why"):
            table.add_column(col, overflow="fold")
        style = {VERIFIED: "green", FAILED: "red"}
        for c in checks:
            table.add_row(c.name, f"[{style.get(c.status, 'yellow')}]{c.status}[/]", c.detail)
        console.print(table)
        if n:
            console.print(f"object store: {n} Stripe object(s), their versions from events of "
                          f"{first:%Y-%m-%d %H:%M}Z .. {last:%Y-%m-%d %H:%M}Z")
        else:
            console.print("object store: empty (no Stripe event applied yet)")
    return 1 if any(c.status == FAILED for c in checks) else 0
