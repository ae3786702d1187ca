"""``recovery-pipeline reconcile``: print the monthly parity table and state mismatches."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("reconcile", help="print billing vs provider parity by month and state mismatches "
                                         "(from the warehouse; run the daily_reconciliation job first)")
    p.add_argument("--all-rows", action="store_true", help="also print rows that agree")
    p.add_argument("--limit", type=int, default=20, help="state mismatches to print")
    p.set_defaults(func=run)


def print_summary(con, *, all_rows: bool = False, limit: int = 20, console=None) -> int:
    """Print parity (totals + any month that differs), coverage problems and mismatches.
    Returns the number of parity rows that differ beyond tolerance."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from recovery_pipeline.reconciliation import mismatches, parity_table
    from recovery_pipeline.reconciliation.parity import coverage_summary

    if console is None:
        import shutil

        console = Console(width=max(110, shutil.get_terminal_size().columns))
    rows = parity_table(con)
    bad = [r for r in rows if r["status"] == "MISMATCH"]
    shown = rows if all_rows else [r for r in rows if r["month"] == "total" or r["status"] != "ok"]
    t = Table(title="Billing vs provider (monthly parity)")
    for col in ("month", "measure", "billing", "provider", "difference", "status"):
        t.add_column(col, justify="right" if col in ("billing", "provider", "difference") else "left",
                     no_wrap=True)
    for r in shown:
        t.add_row(*(escape(str(r[c])) for c in ("month", "measure", "billing", "provider",
                                                 "difference", "status")))
    console.print(t)
    cov = [c for c in coverage_summary(con) if c["status"] != "ok"]
    console.print(f"currency/country coverage: "
                  f"{'all keys agree' if not cov else f'{len(cov)} key(s) differ or are not reported'}")
    for c in cov[:20]:
        console.print(escape(f"  {c['dimension']} {c['key'] or '(none)'}: billing {c['billing']} vs "
                             f"provider {c['provider']} ({c['status']})"))
    try:
        mm = mismatches(con, limit)
    except Exception:  # noqa: BLE001 - the table does not exist before the first run
        mm = None
    if mm is None:
        console.print("state mismatches: not computed yet")
    elif not mm:
        console.print("state mismatches: none")
    else:
        mt = Table(title=f"State mismatches (oldest {len(mm)})")
        for col in ("kind", "invoice_id", "month", "billing_state", "provider_state", "age_hours"):
            mt.add_column(col)
        for m in mm:
            mt.add_row(*(escape(str(m[c])) for c in ("kind", "invoice_id", "month", "billing_state",
                                                      "provider_state", "age_hours")))
        console.print(mt)
    return len(bad)


def run(args) -> int:
    from recovery_pipeline.reconciliation.warehouse_con import connect
    from recovery_pipeline.settings import load_settings

    settings = load_settings()
    with connect(settings.warehouse, read_only=True) as con:  # DuckDB file or PostgreSQL URL
        bad = print_summary(con, all_rows=args.all_rows, limit=args.limit)
    return 1 if bad else 0
