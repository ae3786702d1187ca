"""``recovery-pipeline demo``: the main job on the embedded default.

1. generate a demo billing history (seed 7, N months, ~1500 invoices/month, a few bad rows of every
   quarantine reason) into the billing database and the export drop folder under RECOVERY_DATA_DIR;
2. backfill it through Dagster (raw load with dlt, canonical SQL models), month by month;
3. print a readable summary.

Later issues extend ``print_summary`` (push totals, parity, recovered amounts): it takes the
warehouse target and a rich Console and prints one section per ``SUMMARY_SECTIONS`` entry, so a
new section is a new function appended to that list.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from recovery_pipeline.settings import load_settings


def _table(title: str, columns: list[str], rows: list[tuple], justify_numbers: bool = True):
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        t.add_column(c, justify="right" if justify_numbers and c not in columns[:1] else "left")
    for r in rows:
        t.add_row(*["" if v is None else f"{v:,}" if isinstance(v, int) else str(v) for v in r])
    return t


def section_counts_by_month(wh, console) -> None:
    rows = wh.fetchall(
        "select i.month, count(*), "
        "count(case when i.status = 'paid' then 1 end), "
        "count(case when i.status = 'open' then 1 end), "
        "count(case when i.status = 'uncollectible' then 1 end), "
        "count(case when i.status = 'void' then 1 end), "
        "count(case when i.status = 'refunded' then 1 end), "
        "(select count(*) from canonical.transactions t where t.month = i.month), "
        "(select count(*) from canonical.transactions t where t.month = i.month "
        "   and t.status = 'failed') "
        "from canonical.invoices i group by i.month order by i.month")
    console.print(_table("Invoices by month and state (canonical)",
                         ["month", "invoices", "paid", "open", "uncoll.", "void", "refund.",
                          "tx", "failed tx"], rows))


def section_currencies(wh, console) -> None:
    rows = wh.fetchall(
        "select currency, count(*), sum(amount_minor), count(distinct customer_country) "
        "from canonical.invoices group by currency order by count(*) desc")
    console.print(_table("Invoices by currency (amounts in minor units)",
                         ["currency", "invoices", "amount_minor", "countries"],
                         [(c, int(n), int(a or 0), int(k)) for c, n, a, k in rows]))


def section_outcomes(wh, console) -> None:
    rows = wh.fetchall(
        "select outcome, count(*), sum(failed_attempts), sum(recovered_amount_minor) "
        "from canonical.invoice_outcomes group by outcome order by count(*) desc")
    console.print(_table("Recovery outcomes", ["outcome", "invoices", "failed attempts",
                                               "recovered (minor units, all currencies)"],
                         [(o, int(n), int(f or 0), int(r or 0)) for o, n, f, r in rows]))


def section_quarantine(wh, console) -> None:
    rows = wh.fetchall(
        "select reason, entity, count(*), min(record_id) from canonical.quarantine "
        "group by reason, entity order by reason, entity")
    console.print(_table("Quarantined rows by reason (kept out of the canonical tables)",
                         ["reason", "entity", "rows", "example record"],
                         [(r, e, int(n), x) for r, e, n, x in rows]))


SUMMARY_SECTIONS: list[Callable] = [
    section_counts_by_month, section_currencies, section_outcomes, section_quarantine,
]


def print_summary(target: str, console=None) -> None:
    """Print every ``SUMMARY_SECTIONS`` section over the warehouse at ``target``."""
    from rich.console import Console

    from recovery_pipeline.sqlmodels.runner import warehouse

    console = console or Console()
    with warehouse(target) as wh:
        for section in SUMMARY_SECTIONS:
            section(wh, console)


def register(sub) -> None:
    p = sub.add_parser("demo", help="generate a demo billing history, backfill it, print a summary")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--months", type=int, default=None,
                   help="months of history (default: integration.yaml historical_window_months)")
    p.add_argument("--invoices-per-month", type=int, default=1500)
    p.add_argument("--bad-row-fraction", type=float, default=0.002)
    p.add_argument("--keep", action="store_true", help="keep existing data (default: start fresh)")
    p.add_argument("--no-loop", action="store_true",
                   help="stop after the backfill (skip push, decisions, execution, reconciliation)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from recovery_pipeline.commands.backfill import backfill_window, run_backfill

    console = Console()
    settings = load_settings()
    months = backfill_window(args.months)
    if not args.keep:  # a fresh demo: the generated history replaces the previous one
        # only ever under the data dir: a real exports folder or warehouse elsewhere is left alone
        for p in (settings.exports_dir, settings.data_dir / "dlt_pipelines"):
            if p.resolve().is_relative_to(settings.data_dir):
                shutil.rmtree(p, ignore_errors=True)
        if not settings.warehouse_is_postgres and \
                Path(settings.warehouse).resolve().is_relative_to(settings.data_dir):
            Path(settings.warehouse).unlink(missing_ok=True)
            Path(settings.warehouse + ".wal").unlink(missing_ok=True)
    settings.ensure_dirs()
    t0 = time.perf_counter()
    try:
        from recovery_pipeline.billing_engine.generator import GenerateConfig, generate
    except ImportError:  # pragma: no cover - the generator ships with the package
        console.print("[yellow]billing_engine.generator not available: using existing exports[/]")
    else:
        cfg = GenerateConfig(seed=args.seed, months=len(months),
                             invoices_per_month=args.invoices_per_month,
                             bad_row_fraction=args.bad_row_fraction)
        with console.status("generating the demo billing history"):
            summary = generate(cfg, db_url=settings.billing_db_url, exports_dir=settings.exports_dir,
                               formats=("parquet",))
        console.print(f"Generated {summary.total('invoices'):,} invoices, "
                      f"{summary.total('transactions'):,} transactions over {len(months)} months "
                      f"(seed {args.seed}) in {time.perf_counter() - t0:.1f}s")
    report = run_backfill(months, console=console)
    console.print(f"Backfill: {len(months)} months in {report.seconds:.1f}s "
                  f"({len(report.run_ids)} Dagster runs under {settings.dagster_home})\n")
    print_summary(settings.warehouse, console)
    if not args.no_loop:  # the whole loop: push, decisions, live execution, sync back, parity
        from recovery_pipeline.demo_loop import run_loop

        run_loop(console, settings, fresh=not args.keep)
    return 0
