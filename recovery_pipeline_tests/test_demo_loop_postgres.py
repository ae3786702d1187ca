"""The demo's loop with every store on PostgreSQL: warehouse, ops store, billing database and the
Dagster instance (dagster-postgres run/event/schedule storage), each in its own database.
Reconciliation (provider counts, parity, state mismatches) runs on the Postgres warehouse too."""

from __future__ import annotations

import io

import dagster as dg
import sqlalchemy as sa
from rich.console import Console

from recovery_pipeline.demo_loop import LoopOptions, run_loop
from recovery_pipeline.settings import load_settings
from recovery_pipeline_tests.conftest import PG_ADMIN_URL
from recovery_pipeline_tests.test_demo_loop import ENV_VARS, prepare_history


def _databases(pg_url: str, suffixes: tuple[str, ...]):
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    base_name = pg_url.rsplit("/", 1)[1]
    names = [f"{base_name}_{s}" for s in suffixes]
    with admin.connect() as c:
        for n in names:
            c.execute(sa.text(f'CREATE DATABASE "{n}"'))
    return admin, names, [pg_url.rsplit("/", 1)[0] + f"/{n}" for n in names]


def _drop(admin, names):
    with admin.connect() as c:
        for n in names:
            c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :n"), {"n": n})
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{n}"'))
    admin.dispose()


def test_demo_loop_closes_with_every_store_on_postgres(pg_url, tmp_path, monkeypatch):
    admin, names, (ops_url, billing_url, dagster_url) = _databases(
        pg_url, ("ops", "billing", "dagster"))
    try:
        for var in ENV_VARS:
            monkeypatch.delenv(var, raising=False)
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\n"
            "concurrency:\n  pools:\n    default_limit: 1\n"
            # dagster-postgres binds NOTIFY parameters client-side: the psycopg2 driver (SQLAlchemy
            # 2.1 maps a bare postgresql:// to psycopg 3, whose server-side binding rejects it)
            "storage:\n  postgres:\n    postgres_url: "
            f"\"{dagster_url.replace('postgresql://', 'postgresql+psycopg2://', 1)}\"\n")
        monkeypatch.setenv("RECOVERY_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("RECOVERY_WAREHOUSE", pg_url)
        monkeypatch.setenv("RECOVERY_OPS_STORE_URL", ops_url)
        monkeypatch.setenv("RECOVERY_BILLING_DB_URL", billing_url)
        settings = load_settings()
        settings.ensure_dirs()
        prepare_history(settings)
        buf = io.StringIO()
        report = run_loop(Console(file=buf, width=200), settings,
                          LoopOptions(requests_per_second=200))

        assert {m: report.provider_counts.get(m) for m in report.billing_counts} == \
            report.billing_counts
        assert report.new_transactions, "no live retry wrote a billing transaction"
        assert report.new_transactions_in_canonical == report.new_transactions
        assert report.changes_pushed("transactions") == len(report.new_transactions)
        # reconciliation runs on the Postgres warehouse too: billing and provider agree
        assert report.run_ids.get("daily_reconciliation")
        assert report.parity, "the parity table is empty"
        assert report.parity_differences == []
        assert {r["status"] for r in report.parity} == {"ok"}
        assert report.mismatches == []
        assert "Parity, billing vs provider" in buf.getvalue()
        assert "Loop closed:" in buf.getvalue()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            jobs = {r.job_name for r in instance.get_runs()}
            recon = instance.get_run_by_id(report.run_ids["daily_reconciliation"])
            assert recon.status == dg.DagsterRunStatus.SUCCESS  # its blocking checks passed
        assert {"provider_push", "execute_recovery_actions", "billing_sync_job"} <= jobs
    finally:
        _drop(admin, names)
