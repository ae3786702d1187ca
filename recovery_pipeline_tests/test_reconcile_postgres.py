"""Reconciliation on a PostgreSQL warehouse: the same parity / mismatch SQL, transpiled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pytest
import sqlalchemy as sa

from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import executed_actions
from recovery_pipeline.reconciliation import (
    checking,
    ops_snapshot,
    parity,
    provider_view,
    sqlrun,
    synthetic,
)
from recovery_pipeline.reconciliation.warehouse_con import PostgresCon, connect
from recovery_pipeline_tests._recon_helpers import shift_provider_rows

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TABLES = ("invoices", "transactions", "invoice_outcomes", "subscriptions")


@pytest.fixture
def pg_billing(pg_url):
    """A consistent billing dataset (built in DuckDB, copied into the Postgres warehouse's
    ``canonical`` schema) and the provider rows a provider holding everything would report."""
    duck = duckdb.connect()
    synthetic.generate(duck, 300, months=3, start=NOW - timedelta(days=90), as_of=NOW - timedelta(days=2))
    rows = synthetic.provider_rows_from_billing(duck)
    with connect(pg_url) as con:
        assert isinstance(con, PostgresCon)
        con.execute("create schema if not exists canonical")
        for t in TABLES:
            con.register("_copy", duck.execute(f"select * from canonical.{t}").df())
            con.execute(f"create or replace table canonical.{t} as select * from _copy")
            con.unregister("_copy")
    duck.close()
    return pg_url, rows


def _outcomes(url, rows):
    with connect(url) as con:
        provider_view.write_provider_counts(con, rows)
        sqlrun.materialize(con, "reconciliation", "monthly_parity")
        frame = parity.read_parity(con)
    return {o.name: o for o in checking.parity_outcomes(frame)}


def test_parity_on_postgres_has_no_differences_when_the_provider_holds_everything(pg_billing):
    url, rows = pg_billing
    out = _outcomes(url, rows)
    assert all(o.passed for o in out.values()), {n: o.summary for n, o in out.items() if not o.passed}
    with connect(url) as con:
        total = con.execute("select billing_value, provider_value from reconciliation.monthly_parity "
                            "where month = 'total' and measure = 'invoices' and dimension = 'total'"
                            ).fetchone()
        assert parity.parity_table(con) and all(r["status"] == "ok" for r in parity.parity_table(con))
    assert total == (300, 300)


def test_one_invoice_deleted_at_provider_fails_the_count_check_for_that_month_on_postgres(pg_billing):
    url, rows = pg_billing
    month = sorted({r["month"] for r in rows})[1]
    with connect(url) as con:
        cur, country, outcome = con.execute(
            "select i.currency, i.customer_country, o.outcome from canonical.invoices i join "
            "canonical.invoice_outcomes o using (invoice_id) where i.month = $month "
            "order by i.invoice_id limit 1", {"month": month}).fetchone()
    missing = shift_provider_rows(rows, month, {
        ("invoices", "total", ""): -1, ("invoices", "currency", cur): -1,
        ("invoices", "country", country): -1, ("invoice_outcomes", "outcome", outcome): -1})
    out = _outcomes(url, missing)
    check = out["invoice_counts_match_provider"]
    assert not check.passed
    assert check.months == [month] and month in check.summary and "+1" in check.summary
    assert out["transaction_counts_match_provider"].passed
    assert out["recovery_outcomes_match_provider"].passed


def test_reconcile_command_summary_names_the_month_on_postgres(pg_billing):
    import io

    from rich.console import Console

    from recovery_pipeline.commands.reconcile import print_summary

    url, rows = pg_billing
    month = sorted({r["month"] for r in rows})[0]
    _outcomes(url, shift_provider_rows(rows, month, {("transactions", "total", ""): -2}))
    buf = io.StringIO()
    with connect(url, read_only=True) as con:
        bad = print_summary(con, console=Console(file=buf, width=160))
    assert bad == 2  # the month and the all-months total
    assert month in buf.getvalue() and "MISMATCH" in buf.getvalue()
    assert "state mismatches: not computed yet" in buf.getvalue()


def test_state_mismatches_on_postgres_list_a_recovered_invoice_still_open(pg_billing, tmp_path):
    url, _rows = pg_billing
    engine = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(engine)
    with connect(url) as con:
        open_inv = con.execute("select invoice_id from canonical.invoices where status = 'open' "
                               "order by invoice_id limit 1").fetchone()[0]
        with engine.begin() as c:
            c.execute(sa.insert(executed_actions).values(
                source="webhook", provider="slicker", source_event_id="evt_1", invoice_id=open_inv,
                instruction="recovery.success", business_action="mark_paid", mode="shadow",
                result="shadowed", received_at=NOW - timedelta(hours=5),
                executed_at=NOW - timedelta(hours=5), attempts=1))
        assert ops_snapshot.snapshot(engine, con)["executed_actions"] == 1
        sqlrun.materialize(con, "reconciliation", "state_mismatches", {
            "as_of": NOW, "provider": "slicker", "missed_grace_minutes": 60,
            "executed_grace_minutes": 30})
        found = {(r["kind"], r["invoice_id"]): r for r in parity.mismatches(con)}
    assert set(found) == {("provider_recovered_billing_open", open_inv)}
    assert found[("provider_recovered_billing_open", open_inv)]["age_hours"] == pytest.approx(5.0)


def test_monitoring_sql_runs_on_postgres_with_the_same_numbers_as_duckdb(pg_billing, tmp_path):
    url, _rows = pg_billing
    with connect(url) as con:
        n = sqlrun.materialize(con, "monitoring", "recovery_kpis")
        pg_kpis = con.execute("select month, currency, failed_invoices, recovered_invoices, "
                              "recovered_amount_minor from monitoring.recovery_kpis "
                              "order by month, currency").fetchall()
        sqlrun.materialize(con, "monitoring", "source_freshness", {"as_of": NOW})
        lag = dict(con.execute("select entity, lag_hours from monitoring.source_freshness").fetchall())
        copy = {t: con.execute(f"select * from canonical.{t}").df() for t in ("invoice_outcomes",)}
    duck = duckdb.connect(str(tmp_path / "wh.duckdb"))
    duck.execute("create schema canonical")
    duck.register("_o", copy["invoice_outcomes"])
    duck.execute("create table canonical.invoice_outcomes as select * from _o")
    sqlrun.materialize(duck, "monitoring", "recovery_kpis")
    duck_kpis = duck.execute("select month, currency, failed_invoices, recovered_invoices, "
                             "recovered_amount_minor from monitoring.recovery_kpis "
                             "order by month, currency").fetchall()
    duck.close()
    assert n == len(pg_kpis) > 0
    assert pg_kpis == duck_kpis
    assert lag["invoices"] == pytest.approx(48.0)  # as_of is two days after the newest update


def test_reconciliation_and_monitoring_assets_run_in_dagster_on_a_postgres_warehouse(pg_billing,
                                                                                    tmp_path):
    import dagster as dg

    from recovery_pipeline.defs.monitoring.assets import (
        pipeline_health,
        recovery_kpis,
        source_freshness,
    )
    from recovery_pipeline.defs.monitoring.checks import (
        pipeline_health_checks,
        source_freshness_checks,
    )
    from recovery_pipeline.defs.provider_feedback.provider_assets import provider_counts
    from recovery_pipeline.defs.reconciliation.assets import (
        monthly_parity,
        ops_snapshot as ops_snapshot_asset,
        state_mismatches,
    )
    from recovery_pipeline.defs.reconciliation.checks import monthly_parity_checks, state_mismatch_checks
    from recovery_pipeline.httpserve import serve_in_thread
    from recovery_pipeline_tests._recon_helpers import FakeCounts, counts_resources, provider_count_rows

    url, rows = pg_billing
    month = sorted({r["month"] for r in rows})[2]
    fake = FakeCounts(provider_count_rows(rows))
    assets = [provider_counts, ops_snapshot_asset, monthly_parity, state_mismatches, source_freshness,
              pipeline_health, recovery_kpis]
    checks = [monthly_parity_checks, state_mismatch_checks, source_freshness_checks,
              pipeline_health_checks]
    with serve_in_thread(fake.app()) as base:
        resources = counts_resources(url, tmp_path, base)
        good = dg.materialize([*assets, *checks], resources=resources, raise_on_error=False)
        fake.rows = shift_provider_rows(fake.rows, month, {("invoices", "total", ""): -1})
        bad = dg.materialize([*assets, *checks], resources=resources, raise_on_error=False)

    assert good.success
    done = {e.asset_key.to_user_string() for e in good.get_asset_materialization_events()}
    assert {"reconciliation/monthly_parity", "reconciliation/state_mismatches",
            "monitoring/recovery_kpis", "monitoring/pipeline_health", "provider/counts"} <= done
    parity_checks = {e.check_name: e.passed for e in good.get_asset_check_evaluations()
                     if e.asset_key.to_user_string() == "reconciliation/monthly_parity"}
    assert parity_checks and all(parity_checks.values()), parity_checks
    failed = {e.check_name: e.metadata["months"].value for e in bad.get_asset_check_evaluations()
              if not e.passed and e.asset_key.to_user_string() == "reconciliation/monthly_parity"}
    assert failed == {"invoice_counts_match_provider": month}
    assert "monitoring/recovery_kpis" not in {
        e.asset_key.to_user_string() for e in bad.get_asset_materialization_events()}
