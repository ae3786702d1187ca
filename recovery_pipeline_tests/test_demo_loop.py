"""The demo's whole loop at a tiny size (2 months x 150 invoices, seed 7): push, decisions by
webhook and polling, live execution against the billing engine over HTTP, the incremental sync
carrying the new transactions back, a second push, reconciliation.

The loop runs once for the module (it is the expensive part); each test asserts one behaviour of
that run. The history ends a month before the current one, so every ideal retry time the sandbox
recommends is already past whatever day the suite runs: the outcome depends on the seed only.
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import duckdb
import pytest
import sqlalchemy as sa
from rich.console import Console

from recovery_pipeline.billing_engine.generator import GenerateConfig, generate
from recovery_pipeline.billing_engine.schema import transactions
from recovery_pipeline.commands.backfill import run_backfill
from recovery_pipeline.demo_loop import LoopOptions, run_loop
from recovery_pipeline.ingest.months import add_months, history_months
from recovery_pipeline.ingest.sql_database import bind_ts
from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.settings import load_settings

ENV_VARS = ("RECOVERY_WAREHOUSE", "RECOVERY_OPS_STORE_URL", "RECOVERY_BILLING_DB_URL",
            "RECOVERY_EXPORTS_DIR", "DAGSTER_HOME", "PROVIDER_BASE_URL", "BILLING_ENGINE_URL",
            "RECEIVER_URL", "RECOVERY_EXECUTION_MODE", "RECOVERY_SOURCE_KIND", "RECOVERY_KILL_SWITCH")


def history_end() -> date:
    """First day of the previous month: the generated history stops a full month ago."""
    today = datetime.now(UTC).date()
    return add_months(date(today.year, today.month, 1), -1)


def prepare_history(settings, invoices_per_month: int = 150) -> list[str]:
    end = history_end()
    months = history_months(2, today=end)
    generate(GenerateConfig(seed=7, months=2, invoices_per_month=invoices_per_month, end=end,
                            bad_row_fraction=0.002),
             db_url=settings.billing_db_url, exports_dir=settings.exports_dir, formats=("parquet",))
    run_backfill(months, show_progress=False)
    return months


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo_loop") / "data"
    with pytest.MonkeyPatch.context() as mp:
        for var in ENV_VARS:
            mp.delenv(var, raising=False)
        mp.setenv("RECOVERY_DATA_DIR", str(data))
        settings = load_settings()
        settings.ensure_dirs()
        months = prepare_history(settings)
        buf = io.StringIO()
        started = datetime.now(UTC)
        report = run_loop(Console(file=buf, width=200, force_terminal=False), settings,
                          LoopOptions(requests_per_second=200))
        yield {"report": report, "text": buf.getvalue(), "settings": settings, "months": months,
               "started": started}


def test_provider_counts_equal_billing_counts_after_the_last_push(loop):
    report = loop["report"]
    assert report.billing_counts, "no billing counts were read"
    assert {m: report.provider_counts.get(m) for m in report.billing_counts} == report.billing_counts
    assert sum(c["invoices"] for c in report.billing_counts.values()) == 300


def test_live_retries_write_billing_transactions_that_the_incremental_sync_brings_back(loop):
    report, settings = loop["report"], loop["settings"]
    assert report.execution_mode == "live"
    assert report.retried_invoices, "no invoice was retried live"
    engine = sa.create_engine(settings.billing_db_url)
    with engine.connect() as c:  # every payment attempt the billing engine made during the loop
        new = sorted(r[0] for r in c.execute(sa.select(transactions.c.transaction_id).where(
            transactions.c.created_at >= bind_ts(c, loop["started"]))))
    engine.dispose()
    assert new and new == report.new_transactions
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        found = {r[0] for r in con.execute(
            "select transaction_id from canonical.transactions where transaction_id in "
            "(select unnest(?::varchar[]))", [report.new_transactions]).fetchall()}
    assert found == set(report.new_transactions)
    # they were created now: the incremental sync carried the current month, the backfill did not
    current = datetime.now(UTC).strftime("%Y-%m")
    assert current in report.sync_months and current not in loop["months"]


def test_later_pushes_send_only_the_changes(loop):
    history, *changes = loop["report"].pushes
    assert history["transactions"]["records_sent"] == history["transactions"]["rows_read"]
    assert changes, "no push after the incremental sync"
    sent = sum(p["transactions"]["records_sent"] for p in changes)
    assert sent == len(loop["report"].new_transactions)
    assert all(p["invoices"]["unchanged"] > p["invoices"]["records_sent"] for p in changes)


def test_every_provider_decision_is_stored_once_in_the_inbox(loop):
    report, settings = loop["report"], loop["settings"]
    engine = sa.create_engine(settings.ops_store_url)
    with engine.connect() as c:
        rows, distinct = c.execute(sa.select(
            sa.func.count(), sa.func.count(sa.distinct(webhook_inbox.c.event_id)))).one()
    engine.dispose()
    assert rows == distinct == report.webhooks["recovery_actions_at_provider"] > 0
    assert report.webhooks["receiver_stored"] == rows


def test_parity_shows_no_difference_between_billing_and_provider(loop):
    report = loop["report"]
    assert report.parity, "the parity table is empty"
    assert report.parity_differences == []
    assert {r["status"] for r in report.parity} == {"ok"}
    assert report.mismatches == []


def test_summary_prints_each_part_of_the_loop(loop):
    text = loop["text"]
    for heading in ("Push to the provider", "Failure hand-off", "Billing (canonical) next to the "
                    "provider's counts", "Webhooks:", "Decisions executed in billing",
                    "Loop closed:", "Parity, billing vs provider", "State mismatches",
                    "Execution mode: live"):
        assert heading in text, heading


def test_loop_runs_are_recorded_in_the_dagster_instance(loop):
    import dagster as dg

    with dg.DagsterInstance.from_config(str(loop["settings"].dagster_home)) as instance:
        jobs = {r.job_name for r in instance.get_runs()}
    assert {"provider_push", "failure_handoff", "poll_recovery_actions", "execute_recovery_actions",
            "billing_sync_job", "daily_reconciliation"} <= jobs


def test_loop_leaves_the_process_environment_as_it_found_it(loop):
    import os

    assert "RECOVERY_EXECUTION_MODE" not in os.environ
    assert "PROVIDER_BASE_URL" not in os.environ
