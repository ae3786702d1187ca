"""Polling: paging, dedupe by action id, poll_state, and alerts when polling stops or keeps failing."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from recovery_pipeline.execution.polling import (
    PollError,
    poll_recovery_actions,
    polling_health,
    record_polling_alert,
    slicker_page_fetcher,
)
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.opsstore.models import alert_incidents, poll_state, recovery_actions
from recovery_pipeline.provider_sandbox.app import SandboxConfig, create_app
from recovery_pipeline_tests._execution_fakes import T0, ops_engine


def _pages(n_items: int, page_size: int):
    items = [{"requestId": f"ra_{i}", "invoiceId": f"in_{i}", "actionSuggestion": "ACTION_SUGGESTION_RETRY",
              "idealRetryTime": "2026-01-15T12:00:00Z", "createdAt": "2026-01-15T11:00:00Z"}
             for i in range(n_items)]
    calls = []

    def fetch(token):
        calls.append(token)
        start = int(token or 0)
        nxt = start + page_size
        return {"recoveryActions": items[start:nxt], "nextPageToken": str(nxt) if nxt < n_items else "",
                "totalSize": n_items}

    return fetch, calls


def _count(engine, table):
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_poll_walks_every_page_and_stores_each_action_once(tmp_path):
    engine = ops_engine(tmp_path)
    fetch, calls = _pages(250, 100)
    first = poll_recovery_actions(engine, fetch, now=T0)
    second = poll_recovery_actions(engine, fetch, now=T0 + timedelta(minutes=1))
    assert calls == [None, "100", "200", None, "100", "200"]
    assert (first.new, second.new, second.duplicates) == (250, 0, 250)
    assert _count(engine, recovery_actions) == 250


def test_successful_poll_records_last_success_and_resets_failures(tmp_path):
    engine = ops_engine(tmp_path)

    def broken(token):
        raise PollError("HTTP 503")

    with pytest.raises(PollError):
        poll_recovery_actions(engine, broken, now=T0)
    fetch, _ = _pages(3, 100)
    poll_recovery_actions(engine, fetch, now=T0 + timedelta(minutes=1))
    with engine.connect() as c:
        row = c.execute(sa.select(poll_state)).one()
    assert row.consecutive_failures == 0 and row.last_error is None
    assert polling_health(engine, T0 + timedelta(minutes=2))["status"] == "ok"


def test_repeated_poll_failures_raise_a_failing_alert(tmp_path):
    engine = ops_engine(tmp_path)

    def broken(token):
        raise httpx.ConnectError("connection refused")

    for i in range(3):
        with pytest.raises(PollError):
            poll_recovery_actions(engine, broken, now=T0 + timedelta(minutes=i))
    health = polling_health(engine, T0 + timedelta(minutes=3), failure_threshold=3)
    assert health["status"] == "failing" and "connection refused" in health["last_error"]
    assert record_polling_alert(engine, health, T0) == "fired"
    assert record_polling_alert(engine, health, T0) == "firing"
    with engine.connect() as c:
        inc = c.execute(sa.select(alert_incidents)).one()
    assert (inc.incident_key, inc.status, inc.severity) == ("polling_stopped:slicker_recovery_actions", "firing",
                                                            "ERROR")


def test_polling_that_stopped_is_stale_and_the_alert_resolves_when_it_resumes(tmp_path):
    engine = ops_engine(tmp_path)
    fetch, _ = _pages(1, 100)
    poll_recovery_actions(engine, fetch, now=T0)
    later = T0 + timedelta(minutes=30)
    stale = polling_health(engine, later, stale_after_minutes=15)
    assert stale["status"] == "stale" and not stale["healthy"]
    assert record_polling_alert(engine, stale, later) == "fired"
    poll_recovery_actions(engine, fetch, now=later)
    assert record_polling_alert(engine, polling_health(engine, later), later) == "resolved"


def test_polling_the_sandbox_over_http_pages_with_bearer_auth(tmp_path):
    engine = ops_engine(tmp_path)
    app = create_app(SandboxConfig(api_key="k-test", deliver_in_background=False, requests_per_second=1000))
    txns = [{"id": f"tx_{i}", "paymentGatewayTransactionId": f"gw_{i}", "state": "TRANSACTION_STATE_FAILED",
             "customerId": f"cus_{i}", "invoiceId": f"in_{i}", "subscriptionId": f"sub_{i}", "amount": 1000,
             "currency": "USD", "createdAt": "2026-01-10T10:00:00Z", "paymentGatewayErrorCode": "insufficient_funds"}
            for i in range(5)]
    with serve_in_thread(app) as url:
        r = httpx.post(f"{url}/v1/transactions", json={"transactions": txns},
                       headers={"Authorization": "Bearer k-test"})
        assert r.status_code == 200, r.text
        result = poll_recovery_actions(engine, slicker_page_fetcher(url, "k-test", page_size=2), now=T0)
        with pytest.raises(PollError, match="HTTP 401"):
            poll_recovery_actions(engine, slicker_page_fetcher(url, "wrong-key"), now=T0)
    assert (result.pages, result.new, result.total_size) == (3, 5, 5)
    with engine.connect() as c:
        invoices = sorted(c.execute(sa.select(recovery_actions.c.invoice_id)).scalars())
    assert invoices == [f"in_{i}" for i in range(5)]
