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


def test_revtain_outcomes_arrive_signed_and_mark_paid_wait_or_request_a_card_update(tmp_path):
    import hashlib

    secret = "whsec_e2e_revtain"
    billing_db, ops = _billing_db(tmp_path, countries=("US",) * 12), ops_engine(tmp_path)

    def succeeds(key: str) -> bool:  # the sandbox settles a soft decline by this hash
        return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 3 != 0

    ids = [f"in_{i}" for i in range(12)]
    ok_id = next(i for i in ids if succeeds(i))
    wait_id = next(i for i in ids if not succeeds(i))
    card_id = next(i for i in ids if i not in (ok_id, wait_id))
    receiver = receiver_app(ReceiverConfig(ops_store_url=str(ops.url), secrets={"revtain": secret}))
    with serve_in_thread(receiver) as receiver_url, \
            serve_in_thread(billing_app(db_url=str(billing_db.url), api_key=KEY)) as billing_url, \
            serve_in_thread(sandbox_app(SandboxConfig(
                api_key=API, webhook_url=receiver_url, webhook_secrets={"revtain": secret},
                deliver_in_background=False))) as sandbox_url:
        for invoice_id, code, present in ((ok_id, "do_not_honor", False), (wait_id, "do_not_honor", False),
                                          (card_id, "expired_card", True)):
            r = httpx.post(f"{sandbox_url}/api/recovery/execute", headers={"X-API-KEY": API}, json={
                "paymentMethodToken": f"pm_{invoice_id}", "amount": 2500, "currency": "USD",
                "originalDeclineCode": code, "idempotencyKey": invoice_id, "customerPresent": present,
                "isTrialConversion": False, "metadata": {"invoiceId": invoice_id}})
            assert r.status_code == 200, r.text
        assert httpx.post(f"{sandbox_url}/sandbox/deliver", json={}).json()["delivered"] == 3
        with HttpBillingSystem(billing_url, KEY) as billing:
            execute_pending(ops, billing, policy_from_config({"mode": "live"}, env={}), env={})
    with ops.connect() as c:
        audit = {r.invoice_id: (r.business_action, r.result)
                 for r in c.execute(sa.select(executed_actions))}
    with billing_db.connect() as c:
        inv = {r.invoice_id: r for r in c.execute(sa.select(invoices))}
    assert audit == {ok_id: ("mark_paid", "executed"), wait_id: ("noop", "noop"),
                     card_id: ("request_payment_method_update", "executed")}
    assert inv[ok_id].status == "paid" and inv[wait_id].status == "open"
    assert inv[card_id].payment_method_update_requested_at is not None
