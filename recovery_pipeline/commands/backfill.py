"""``recovery-pipeline backfill --months N``: materialize raw + canonical for N months, in Dagster.

Runs ``billing_sync_job`` on the Dagster instance under ``settings.dagster_home`` (the UI shows
every partition's materialization). Two modes:

* ``single_run`` (default): one run over the window's partition range, exactly what a Dagster UI
  backfill does with the assets' single-run backfill policy: one dlt load (file by file, so memory
  stays bounded), then each canonical model month by month. The progress bar follows the run's
  materializations (one per asset and month).
* ``per_month``: one run per month, oldest first, then a run that refreshes
  ``canonical/invoice_outcomes`` over the whole window (a retry can land in the month after its
  invoice). Slower (a run's fixed cost per month), handy to watch month by month.

Re-running is idempotent: export files already loaded are skipped (dlt state), the SQL source
reads only rows changed since each month's cursor, and each canonical month is replaced.

Default window: integration.yaml ``historical_window_months``: the N complete months before the
current one (the current month is the incremental sensor's business).
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from recovery_pipeline.ingest.months import history_months, month_to_partition
from recovery_pipeline.integration import MAX_WINDOW_MONTHS, load_integration
from recovery_pipeline.settings import load_settings

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
RAW_ASSETS = 4  # customers, subscriptions, invoices, transactions


@dataclass
class BackfillReport:
    months: list[str]
    mode: str
    run_ids: list[str] = field(default_factory=list)
    seconds_by_run: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def ensure_instance_config(dagster_home) -> None:
    """A minimal dagster.yaml when there is none (no telemetry; pools run one step at a time,
    DuckDB being a single-writer file). Never overwrites an existing file."""
    path = Path(dagster_home) / "dagster.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("telemetry:\n  enabled: false\n"
                        "concurrency:\n  pools:\n    default_limit: 1\n")


def backfill_window(months: int | None = None) -> list[str]:
    settings = load_settings()
    n = months or load_integration(settings.integration_file).historical_window_months
    if not 1 <= n <= MAX_WINDOW_MONTHS:
        raise ValueError(f"--months: {n} is outside 1..{MAX_WINDOW_MONTHS}")
    return history_months(n)


def _execute_with_progress(job, instance, progress, task, expected: int, **kwargs):
    """Run ``job`` in-process in a thread; advance ``task`` with the run's materializations."""
    import dagster as dg

    run_id = str(uuid.uuid4())
    box: dict = {}

    def _target():
        try:
            box["result"] = job.execute_in_process(instance=instance, run_id=run_id,
                                                   run_config=QUIET, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    start = progress.tasks[task].completed
    worker = threading.Thread(target=_target, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
        try:
            done = len(instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=10_000).records)
        except Exception:  # noqa: BLE001 - the run may not be registered yet
            done = 0
        progress.update(task, completed=start + min(done, expected))
    if "error" in box:
        raise box["error"]
    progress.update(task, completed=start + expected)
    return box["result"]


def run_backfill(months: list[str], *, mode: str = "single_run", show_progress: bool = True,
                 console=None) -> BackfillReport:
    """Materialize ``billing_sync_job`` for ``months`` (see the module docstring for modes)."""
    import dagster as dg
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from recovery_pipeline.definitions import build_definitions
    from recovery_pipeline.defs.canonical.assets import CANONICAL_MODELS

    if mode not in ("single_run", "per_month"):
        raise ValueError(f"mode: {mode!r} is not single_run or per_month")
    settings = load_settings()
    settings.ensure_dirs()
    ensure_instance_config(settings.dagster_home)
    defs = build_definitions()  # resources from the current environment
    job = defs.resolve_job_def("billing_sync_job")
    report = BackfillReport(months=list(months), mode=mode)
    per_month = RAW_ASSETS + len(CANONICAL_MODELS)
    outcomes = dg.AssetKey(["canonical", "invoice_outcomes"])
    started = time.perf_counter()
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance, Progress(
        TextColumn("[bold]backfill[/] {task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total} materializations"), TimeElapsedColumn(),
        console=console, disable=not show_progress,
    ) as progress:
        total = per_month * len(months) + (len(months) if mode == "per_month" else 0)
        task = progress.add_task("", total=total)
        runs: list[tuple[str, dict, int]] = []
        if mode == "single_run" and months:
            runs.append((f"{months[0]}..{months[-1]}", {"tags": {
                "recovery/backfill": "cli",
                "dagster/asset_partition_range_start": month_to_partition(months[0]),
                "dagster/asset_partition_range_end": month_to_partition(months[-1])}},
                per_month * len(months)))
        elif months:
            runs += [(m, {"partition_key": month_to_partition(m),
                          "tags": {"recovery/backfill": "cli"}}, per_month) for m in months]
            runs.append(("invoice outcomes", {"asset_selection": [outcomes], "tags": {
                "recovery/backfill": "cli",
                "dagster/asset_partition_range_start": month_to_partition(months[0]),
                "dagster/asset_partition_range_end": month_to_partition(months[-1])}},
                len(months)))
        for label, kwargs, expected in runs:
            progress.update(task, description=label)
            t0 = time.perf_counter()
            result = _execute_with_progress(job, instance, progress, task, expected, **kwargs)
            report.run_ids.append(result.run_id)
            report.seconds_by_run[label] = time.perf_counter() - t0
    report.seconds = time.perf_counter() - started
    return report


def register(sub) -> None:
    p = sub.add_parser("backfill", help="load and model N months of billing history in Dagster")
    p.add_argument("--months", type=int, default=None,
                   help="months of history (default: integration.yaml historical_window_months)")
    p.add_argument("--per-month", action="store_true",
                   help="one Dagster run per month (default: one run over the whole window)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    console = Console()
    months = backfill_window(args.months)
    console.print(f"Backfilling {len(months)} month(s): {months[0]} .. {months[-1]}")
    report = run_backfill(months, mode="per_month" if args.per_month else "single_run",
                          show_progress=not args.no_progress, console=console)
    console.print(f"Done in {report.seconds:.1f}s ({len(report.run_ids)} Dagster run(s), "
                  f"instance {load_settings().dagster_home}).")
    return 0
