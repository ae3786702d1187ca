"""The executor and the poller on a PostgreSQL ops store (production layout)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from recovery_pipeline.execution.executor import execute_pending
from recovery_pipeline.execution.policy import policy_from_config
from recovery_pipeline.execution.polling import poll_recovery_actions, polling_health
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import executed_actions, recovery_actions, webhook_inbox
from recovery_pipeline_tests._execution_fakes import FakeBilling, add_inbox, invoice, past, slicker_event

pytestmark = pytest.mark.postgres


def test_postgres_ops_store_executes_once_and_dedupes_polled_actions(pg_url):
    engine = create_ops_engine(pg_url)
    init_ops_store(engine)
    billing = FakeBilling({"in_1": invoice("in_1")})
    add_inbox(engine, "slicker", "evt_1", slicker_event("evt_1", "recovery_action", "in_1",
                                                        "ACTION_SUGGESTION_RETRY", ideal=past()))
    policy = policy_from_config({"mode": "live"}, env={})
    execute_pending(engine, billing, policy, env={})
    with engine.begin() as c:
        c.execute(webhook_inbox.update().values(status="pending"))
    second = execute_pending(engine, billing, policy, env={})
    page = {"recoveryActions": [{"requestId": "ra_1", "invoiceId": "in_2",
                                 "actionSuggestion": "ACTION_SUGGESTION_CARD_CHANGE"}], "nextPageToken": ""}
    poll_recovery_actions(engine, lambda token: page)
    poll_recovery_actions(engine, lambda token: page)
    with engine.connect() as c:
        results = c.execute(sa.select(executed_actions.c.result)).scalars().all()
        polled = c.execute(sa.select(sa.func.count()).select_from(recovery_actions)).scalar_one()
    engine.dispose()
    assert billing.calls == [("retry", "in_1", "slicker:evt_1")] and second.duplicates == 1
    assert results == ["executed"] and polled == 1
    assert polling_health(create_ops_engine(pg_url))["status"] == "ok"
