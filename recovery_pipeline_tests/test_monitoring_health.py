"""Pipeline health metrics from the ops store and recovery KPIs from the canonical outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pytest
import sqlalchemy as sa

from recovery_pipeline.monitoring.charts import recovery_chart_png
from recovery_pipeline.monitoring.health import pipeline_health, poll_statuses
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import (
    poll_state,
    recovery_actions,
    request_log,
    webhook_inbox,
    webhook_rejections,
)
from recovery_pipeline.reconciliation import sqlrun, synthetic

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path):
    eng = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(eng)
    return eng


def test_webhook_success_rate_and_latency(engine):
    with engine.begin() as c:
        for i, latency in enumerate([0.1, 0.2, 0.3, 4.0]):
            t = NOW - timedelta(minutes=10)
            c.execute(sa.insert(webhook_inbox).values(
                provider="slicker", event_id=f"e{i}", event_type="recovery_action", received_at=t,
                headers_json="{}", body="{}", status="processed", attempts=1,
                processed_at=t + timedelta(seconds=latency)))
        c.execute(sa.insert(webhook_rejections).values(provider="slicker", status_code=401,
                                                       reason="bad token", received_at=NOW))
    h = pipeline_health(engine, now=NOW)
    assert h["webhooks_received"] == 4 and h["webhooks_rejected"] == 1
    assert h["webhook_success_rate"] == pytest.approx(0.8)
    assert h["webhook_latency_p50_s"] == pytest.approx(0.25)
    assert h["webhook_latency_max_s"] == pytest.approx(4.0)


def test_backlog_missed_actions_and_api_retries(engine):
    with engine.begin() as c:
        for i, ideal in enumerate([NOW - timedelta(hours=3), NOW + timedelta(hours=3)]):
            c.execute(sa.insert(recovery_actions).values(
                provider="slicker", action_id=f"a{i}", invoice_id=f"in_{i}", ideal_retry_time=ideal,
                polled_at=NOW - timedelta(hours=4), body="{}", status="pending", attempts=0))
        c.execute(sa.insert(request_log).values(provider="slicker", endpoint="/v1/invoices", status_code=200,
                                                attempts=3, records=100, started_at=NOW - timedelta(hours=1)))
        c.execute(sa.insert(request_log).values(provider="slicker", endpoint="/v1/invoices", status_code=503,
                                                attempts=5, records=100, error="HTTP 503",
                                                started_at=NOW - timedelta(hours=1)))
    h = pipeline_health(engine, now=NOW)
    assert h["action_backlog"] == 2 and h["actions_missed_after_ideal_time"] == 1
    assert h["oldest_pending_action_age_h"] == pytest.approx(4.0)
    assert h["api_requests"] == 2 and h["api_failures"] == 1 and h["api_retries"] == 6


def test_poller_is_stopped_after_repeated_failures(engine):
    with engine.begin() as c:
        c.execute(sa.insert(poll_state).values(name="p", last_success_at=NOW - timedelta(minutes=5),
                                               consecutive_failures=0))
    assert not poll_statuses(engine, now=NOW)[0].stopped
    with engine.begin() as c:
        c.execute(sa.update(poll_state).values(last_success_at=NOW - timedelta(hours=1)))
    assert poll_statuses(engine, now=NOW)[0].stopped


def test_recovery_kpis_by_month_and_chart(tmp_path):
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    synthetic.generate(con, 400, months=2)
    sqlrun.materialize(con, "monitoring", "recovery_kpis")
    rows = con.execute("select month, failed_invoices, recovered_invoices, unrecovered_invoices, "
                       "recovery_rate from monitoring.recovery_kpis where currency = 'all'").fetchall()
    expected = con.execute(
        "select month, count(*) filter (where failed_attempts > 0), "
        "count(*) filter (where outcome = 'paid_after_failure'), count(*) filter (where outcome = 'unrecovered') "
        "from canonical.invoice_outcomes group by month order by month").fetchall()
    assert [r[:4] for r in rows] == [tuple(e) for e in expected]
    assert all((r[4] is None) if r[1] == 0 else r[4] == pytest.approx(r[2] / r[1]) for r in rows)
    png = recovery_chart_png(con.execute("select * from monitoring.recovery_kpis").df())
    con.close()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
