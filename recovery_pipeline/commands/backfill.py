"""``recovery-pipeline backfill --months N``: materialize raw + canonical month by month, in Dagster.

Each month is one run of ``billing_sync_job`` (raw load with dlt, then the canonical SQL models)
on the Dagster instance under ``settings.dagster_home``, so the UI shows every materialization.
A last run refreshes ``canonical/invoice_outcomes`` over the whole window (a retry can land in the
month after its invoice). Re-running is idempotent: files already loaded are skipped, and each
canonical month is replaced, not appended.

Default window: integration.yaml ``historical_window_months``; the months are the N complete
months before the current one (the current month is the incremental sensor's business).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from recovery_pipeline.ingest.months import history_months, month_to_partition
from recovery_pipeline.integration import MAX_WINDOW_MONTHS, load_integration
from recovery_pipeline.settings import load_settings


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class BackfillReport:
    months: list[str]
    run_ids: list[str] = field(default_factory=list)
    seconds_by_month: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def backfill_window(months: int | None = None) -> list[str]:
    settings = load_settings()
    n = months or load_integration(settings.integration_file).historical_window_months
    if not 1 <= n <= MAX_WINDOW_MONTHS:
        raise ValueError(f"--months: {n} is outside 1..{MAX_WINDOW_MONTHS}")
    return history_months(n)


def run_backfill(months: list[str], *, show_progress: bool = True, console=None) -> BackfillReport:
    """Run ``billing_sync_job`` for each month (oldest first), then refresh invoice outcomes."""
    import dagster as dg
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from recovery_pipeline.definitions import build_definitions

    settings = load_settings()
    settings.ensure_dirs()
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    defs = build_definitions()  # resources from the current environment
    job = defs.resolve_job_def("billing_sync_job")
    report = BackfillReport(months=list(months))
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance, Progress(
        TextColumn("[bold]backfill[/] {task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
        console=console, disable=not show_progress, transient=False,
    ) as progress:
        task = progress.add_task("", total=len(months) + 1)
        for month in months:
            progress.update(task, description=month)
            t0 = time.perf_counter()
            result = job.execute_in_process(partition_key=month_to_partition(month),
                                            instance=instance, run_config=QUIET,
                                            tags={"recovery/backfill": "cli"})
            report.run_ids.append(result.run_id)
            report.seconds_by_month[month] = time.perf_counter() - t0
            progress.advance(task)
        if months:
            progress.update(task, description="invoice outcomes (whole window)")
            result = job.execute_in_process(
                instance=instance, run_config=QUIET,
                asset_selection=[dg.AssetKey(["canonical", "invoice_outcomes"])],
                tags={"recovery/backfill": "cli",
                      "dagster/asset_partition_range_start": month_to_partition(months[0]),
                      "dagster/asset_partition_range_end": month_to_partition(months[-1])},
            )
            report.run_ids.append(result.run_id)
        progress.advance(task)
    report.seconds = time.perf_counter() - started
    return report


def register(sub) -> None:
    p = sub.add_parser("backfill", help="load and model N months of billing history, month by month")
    p.add_argument("--months", type=int, default=None,
                   help="months of history (default: integration.yaml historical_window_months)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    console = Console()
    months = backfill_window(args.months)
    console.print(f"Backfilling {len(months)} month(s): {months[0]} .. {months[-1]}")
    report = run_backfill(months, show_progress=not args.no_progress, console=console)
    console.print(f"Done in {report.seconds:.1f}s ({len(report.run_ids)} Dagster runs).")
    return 0
