"""``recovery-pipeline generate``: write a deterministic demo billing history.

Into the billing database (SQLite under ``data/`` by default, Postgres by ``--db-url``) and as
export files (``<exports-dir>/<entity>/<YYYY-MM>.<fmt>``), the same rows in both.
"""

from __future__ import annotations

import json
import shutil
from datetime import date

from recovery_pipeline.settings import load_settings


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate a demo billing history (database + export files)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--invoices-per-month", type=int, default=2000)
    p.add_argument("--format", default="parquet,csv",
                   help="export formats, comma separated: parquet, csv, jsonl (default parquet,csv)")
    p.add_argument("--bad-row-fraction", type=float, default=0.002,
                   help="fraction of extra bad rows, one kind per quarantine reason (0 = none)")
    p.add_argument("--end", type=date.fromisoformat, default=None,
                   help="exclusive end (YYYY-MM-DD, floored to the month); default: this month")
    p.add_argument("--chunk-size", type=int, default=50_000)
    p.add_argument("--exports-dir", default=None, help="default: settings exports dir")
    p.add_argument("--no-exports", action="store_true", help="do not write export files")
    p.add_argument("--db-url", default=None, help="billing database URL (default: settings)")
    p.add_argument("--no-db", action="store_true", help="do not write the billing database")
    p.add_argument("--keep-exports", action="store_true",
                   help="do not clear the exports dir first (files of the same months are overwritten)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from recovery_pipeline.billing_engine.generator import ENTITY_ORDER, GenerateConfig, generate

    settings = load_settings()
    settings.ensure_dirs()
    console = Console(stderr=args.json)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    exports_dir = None if args.no_exports else (args.exports_dir or settings.exports_dir)
    db_url = None if args.no_db else (args.db_url or settings.billing_db_url)
    if exports_dir is not None and not args.keep_exports:
        from pathlib import Path

        for entity in ENTITY_ORDER:
            shutil.rmtree(Path(exports_dir) / entity, ignore_errors=True)
    cfg = GenerateConfig(seed=args.seed, months=args.months,
                         invoices_per_month=args.invoices_per_month, end=args.end,
                         bad_row_fraction=args.bad_row_fraction, chunk_size=args.chunk_size)
    with Progress(TextColumn("[bold]generating[/] {task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("", total=None)

        def progress(month: str, done: int, total: int) -> None:
            bar.update(task, description=month, completed=done, total=total)

        summary = generate(cfg, db_url=db_url, exports_dir=exports_dir, formats=formats,
                           progress=progress)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
        return 0
    statuses = ("paid", "open", "uncollectible", "void", "refunded")
    table = Table(title=f"billing history (seed {cfg.seed}) in {summary.seconds:.1f}s")
    table.add_column("month")
    for e in ENTITY_ORDER:
        table.add_column(e, justify="right")
    for st in statuses:
        table.add_column(st, justify="right")
    for m in summary.months:
        st = summary.invoice_statuses.get(m, {})
        table.add_row(m, *(str(summary.counts.get(e, {}).get(m, 0)) for e in ENTITY_ORDER),
                      *(str(st.get(k, 0)) for k in statuses))
    table.add_row("total", *(str(summary.total(e)) for e in ENTITY_ORDER),
                  *(str(sum(v.get(k, 0) for v in summary.invoice_statuses.values())) for k in statuses))
    console.print(table)
    console.print("currencies: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.currencies.items())))
    if summary.bad_rows:
        console.print("bad rows injected: " + ", ".join(
            f"{k} {len(v)}" for k, v in summary.bad_rows.items()))
    if db_url:
        console.print(f"billing database: {db_url.split('@')[-1]}")
    if exports_dir:
        console.print(f"exports: {exports_dir} ({', '.join(formats)})")
    return 0
