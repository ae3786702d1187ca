"""The whole decision loop over loopback HTTP: sandbox -> receiver -> inbox / polling -> executor ->
demo billing engine, with a duplicate delivery and the same decision arriving on both paths."""

from __future__ import annotations

from datetime import timedelta

import httpx
import sqlalchemy as sa

from recovery_pipeline.billing_engine.app import create_app as billing_app
from recovery_pipeline.billing_engine.schema import invoices, transactions
from recovery_pipeline.execution.billing import HttpBillingSystem
from recovery_pipeline.execution.executor import execute_pending
from recovery_pipeline.execution.policy import policy_from_config
from recovery_pipeline.execution.polling import poll_recovery_actions, slicker_page_fetcher
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.opsstore.models import executed_actions, recovery_actions, webhook_inbox
from recovery_pipeline.opsstore.store import utcnow
from recovery_pipeline.provider_sandbox.app import SandboxConfig, create_app as sandbox_app
from recovery_pipeline.webhooks import signing
from recovery_pipeline.webhooks.app import ReceiverConfig, create_app as receiver_app
from recovery_pipeline_tests._execution_fakes import ops_engine
from recovery_pipeline_tests.test_execution_billing_http import KEY, _billing_db

TOKEN = "slicker-hook-token"
API = "provider-key"


def _failed_txn(i: int) -> dict:
    return {"id": f"tx_{i}", "paymentGatewayTransactionId": f"ch_{i}", "state": "TRANSACTION_STATE_FAILED",
            "customerId": f"cus_{i}", "invoiceId": f"in_{i}", "subscriptionId": f"sub_{i}", "amount": 2500,
            "currency": "USD", "createdAt": "2026-01-15T12:00:00Z",
            "paymentGatewayErrorCode": "insufficient_funds"}


def test_webhook_and_polled_copies_of_one_decision_with_a_redelivery_retry_the_invoice_once(tmp_path):
    billing_db, ops = _billing_db(tmp_path), ops_engine(tmp_path)
    receiver = receiver_app(ReceiverConfig(ops_store_url=str(ops.url), secrets={"slicker": TOKEN}))
    with serve_in_thread(receiver) as receiver_url, \
            serve_in_thread(billing_app(db_url=str(billing_db.url), api_key=KEY)) as billing_url, \
            serve_in_thread(sandbox_app(SandboxConfig(
                api_key=API, webhook_url=receiver_url, webhook_secrets={"slicker": TOKEN},
                deliver_in_background=False, requests_per_second=1000))) as sandbox_url:
        pushed = httpx.post(f"{sandbox_url}/v1/transactions", json={"transactions": [_failed_txn(0)]},
                            headers={"Authorization": f"Bearer {API}"})
        assert pushed.status_code == 200, pushed.text
        delivered = httpx.post(f"{sandbox_url}/sandbox/deliver", json={}).json()
        assert delivered["delivered"] == 1
        # the same webhook delivered a second time (the provider did not see our 200)
        with ops.connect() as c:
            stored = c.execute(sa.select(webhook_inbox.c.body)).scalar_one()
        again = httpx.post(f"{receiver_url}/webhooks/slicker", content=stored,
                           headers=signing.signed_headers("slicker", TOKEN, stored))
        assert again.json()["duplicate"] is True
        poll_recovery_actions(ops, slicker_page_fetcher(sandbox_url, API))
        with HttpBillingSystem(billing_url, KEY) as billing:
            report = execute_pending(ops, billing, policy_from_config({"mode": "live"}, env={}),
                                     now=utcnow() + timedelta(days=60), env={})
    with ops.connect() as c:
        audit = c.execute(sa.select(executed_actions)).all()
        inbox_status = c.execute(sa.select(webhook_inbox.c.status)).scalars().all()
        polled_status = c.execute(sa.select(recovery_actions.c.status)).scalars().all()
    with billing_db.connect() as c:
        attempts = c.execute(sa.select(sa.func.count()).select_from(transactions)
                             .where(transactions.c.invoice_id == "in_0")).scalar_one()
        status = c.execute(sa.select(invoices.c.status).where(invoices.c.invoice_id == "in_0")).scalar_one()
    assert report.duplicates == 1
    assert [(a.business_action, a.result) for a in audit] == [("retry_now", "executed")]
    assert inbox_status == ["processed"] and polled_status == ["processed"]
    assert attempts == 2 and status in ("open", "paid")
