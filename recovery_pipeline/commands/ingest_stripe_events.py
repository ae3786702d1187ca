"""``recovery-pipeline ingest-stripe-events PATH...``: replay Stripe event exports into the ops store.

Takes files of Stripe events (one event per file, a JSON array, JSON lines, or the list page that
``stripe events list`` prints), stores each raw in the inbox (dedupe on the event id) and runs it
through the same mapping and object store as ``POST /webhooks/stripe``. No signature check: these
are exports. Prints what it stored and what it skipped, with the reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("ingest-stripe-events",
                       help="replay Stripe event JSON files through the Stripe mapping (no signature)")
    p.add_argument("paths", nargs="+", type=Path, help="files or folders of Stripe events")
    p.add_argument("--ops-store-url", help="SQLAlchemy URL of the ops store (default: settings)")
    p.add_argument("--quiet", action="store_true", help="print the summary only")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
    from recovery_pipeline.settings import load_settings
    from recovery_pipeline.stripe_connector.files import EventFileError, iter_event_files, read_event_file
    from recovery_pipeline.stripe_connector.store import build_rows, ingest_events

    console = Console()
    settings = load_settings()
    url = args.ops_store_url or settings.ops_store_url
    if url.startswith("sqlite") and not args.ops_store_url:
        settings.ensure_dirs()
    engine = create_ops_engine(url)
    init_ops_store(engine)

    table = Table(title="Stripe events")
    for col in ("file", "event", "type", "result", "detail"):
        table.add_column(col, overflow="fold")
    counts: Counter = Counter()
    bad_files = 0
    try:
        files = list(iter_event_files(args.paths))
    except EventFileError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    for path in files:
        try:
            fe = read_event_file(path)
        except (EventFileError, UnicodeDecodeError, OSError) as exc:
            bad_files += 1
            table.add_row(str(path), "-", "-", "unreadable", str(exc))
            continue
        for res in ingest_events(engine, fe.events, source=f"file:{path.name}"):
            counts[res.status] += 1
            detail = res.reason or ""
            if res.objects:
                detail = "; ".join(res.objects) + (f" ({detail})" if detail else "")
            table.add_row(path.name, res.event_id, res.event_type or "-", res.status, detail)
    if not args.quiet:
        console.print(table)
    rows = build_rows(engine)
    console.print(
        f"stored {counts['stored']}, skipped {counts['skipped']}, duplicates {counts['duplicate']}, "
        f"rejected {counts['rejected']}, unreadable files {bad_files}; store now maps to "
        f"{len(rows.customers)} customers, {len(rows.subscriptions)} subscriptions, "
        f"{len(rows.invoices)} invoices, {len(rows.transactions)} transactions"
        + (f" ({len(rows.unlinked_charges)} charges without an invoice left out)" if rows.unlinked_charges else ""))
    return 1 if (counts["rejected"] or bad_files) else 0
