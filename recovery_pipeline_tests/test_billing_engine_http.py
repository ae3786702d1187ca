"""The demo billing engine's actions, over its HTTP API on loopback (and on Postgres)."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from recovery_pipeline.billing_engine import db as bdb
from recovery_pipeline.billing_engine.app import create_app
from recovery_pipeline.billing_engine.client import BillingEngineClient, BillingEngineError
from recovery_pipeline.billing_engine.engine import BillingEngine
from recovery_pipeline.billing_engine.gateway import Gateway
from recovery_pipeline.billing_engine.schema import customers, invoices, subscriptions, transactions
from recovery_pipeline.httpserve import serve_in_thread

KEY = "test-billing-key"
SEED = 21
T0 = datetime(2025, 3, 1, 12, tzinfo=UTC)
NOW = T0 + timedelta(days=5)


def _add_invoice(engine, invoice_id: str, *, status: str = "open", decline_code: str | None = "insufficient_funds",
                 attempts: int = 1, last_attempt_at: datetime = T0 + timedelta(hours=1)) -> None:
    cus, sub = f"cus_{invoice_id}", f"sub_{invoice_id}"
    with engine.begin() as c:
        c.execute(customers.insert().values(customer_id=cus, email=f"{cus}@example.com", country="US",
                                            created_at=T0, updated_at=T0))
        c.execute(subscriptions.insert().values(
            subscription_id=sub, customer_id=cus, plan_id="pro-monthly", status="past_due", amount_minor=2900,
            currency="USD", billing_period=1, billing_period_unit="month", created_at=T0, updated_at=T0))
        c.execute(invoices.insert().values(
            invoice_id=invoice_id, customer_id=cus, subscription_id=sub, status=status, amount_minor=2900,
            currency="USD", attempt_count=attempts, collection_paused=False, created_at=T0,
            updated_at=last_attempt_at, paid_at=last_attempt_at if status == "paid" else None))
        for a in range(1, attempts + 1):
            ok = status == "paid" and a == attempts
            c.execute(transactions.insert().values(
                transaction_id=f"txn_{invoice_id}_{a}", invoice_id=invoice_id, customer_id=cus,
                subscription_id=sub, status="succeeded" if ok else "failed", amount_minor=2900,
                currency="USD", attempt_number=a, gateway="stripe", gateway_transaction_id=f"ch_{invoice_id}_{a}",
                decline_code=None if ok else decline_code, payment_method_type="card",
                payment_method_token="pm_old", card_brand="visa", card_bin="424242",
                created_at=last_attempt_at - timedelta(days=attempts - a),
                updated_at=last_attempt_at - timedelta(days=attempts - a)))


def _find_invoice_id(predicate, prefix: str = "in_") -> str:
    """An invoice id for which the (deterministic) gateway behaves as the test needs."""
    for i in range(500):
        if predicate(f"{prefix}{i}"):
            return f"{prefix}{i}"
    raise AssertionError("no invoice id found with the wanted gateway behaviour")


@pytest.fixture
def billing(tmp_path):
    engine = bdb.create_billing_engine(f"sqlite:///{tmp_path / 'billing.sqlite'}")
    bdb.init_billing_db(engine)
    yield BillingEngine(engine, gateway=Gateway(SEED), clock=lambda: NOW)
    engine.dispose()


@contextlib.contextmanager
def _served(billing: BillingEngine):
    with serve_in_thread(create_app(billing, api_key=KEY)) as url, BillingEngineClient(url, KEY) as client:
        yield url, client


def _txns(engine, invoice_id: str) -> list:
    with engine.connect() as c:
        return c.execute(sa.select(transactions).where(transactions.c.invoice_id == invoice_id)
                         .order_by(transactions.c.attempt_number)).all()


def _invoice(engine, invoice_id: str):
    with engine.connect() as c:
        return c.execute(sa.select(invoices).where(invoices.c.invoice_id == invoice_id)).one()


def test_successful_retry_over_http_writes_a_new_transaction_and_marks_the_invoice_paid(billing):
    gw = Gateway(SEED)
    iid = _find_invoice_id(lambda i: gw.charge(invoice_id=i, attempt_number=2,
                                               previous_decline_code="insufficient_funds").succeeded)
    _add_invoice(billing.engine, iid)
    with _served(billing) as (_url, client):
        body = client.retry(iid, idempotency_key="k-1")
    txns = _txns(billing.engine, iid)
    inv = _invoice(billing.engine, iid)
    assert [(t.attempt_number, t.status) for t in txns] == [(1, "failed"), (2, "succeeded")]
    assert body["transaction"]["transaction_id"] == txns[1].transaction_id
    assert (inv.status, inv.attempt_count) == ("paid", 2)
    assert bdb.as_utc(inv.paid_at) == NOW and bdb.as_utc(inv.updated_at) == NOW
    assert body["invoice"]["status"] == "paid"


def test_failed_retry_over_http_adds_a_failed_transaction_and_keeps_the_invoice_open(billing):
    _add_invoice(billing.engine, "in_stolen", decline_code="stolen_card")
    with _served(billing) as (_url, client):
        body = client.retry("in_stolen", idempotency_key="k-1")
    txns = _txns(billing.engine, "in_stolen")
    assert [(t.attempt_number, t.status, t.decline_code) for t in txns] == [
        (1, "failed", "stolen_card"), (2, "failed", "stolen_card")]
    assert (body["invoice"]["status"], body["invoice"]["attempt_count"]) == ("open", 2)
    assert _invoice(billing.engine, "in_stolen").attempt_count == 2


def test_repeating_an_idempotency_key_returns_the_first_result_without_charging_again(billing):
    _add_invoice(billing.engine, "in_1")
    with _served(billing) as (_url, client):
        first = client.retry("in_1", idempotency_key="evt_1")
        second = client.retry("in_1", idempotency_key="evt_1")
    assert first == second
    assert len(_txns(billing.engine, "in_1")) == 2


def test_concurrent_requests_with_one_idempotency_key_charge_once(billing):
    _add_invoice(billing.engine, "in_1", decline_code="do_not_honor")
    results, errors = [], []
    with _served(billing) as (url, _client):
        def go():
            try:
                with BillingEngineClient(url, KEY) as c:
                    results.append(c.retry("in_1", idempotency_key="same-key"))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=go) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(_txns(billing.engine, "in_1")) == 2
    assert all(r == results[0] for r in results)


def test_reusing_an_idempotency_key_for_another_action_is_rejected(billing):
    _add_invoice(billing.engine, "in_1")
    with _served(billing) as (_url, client):
        client.pause_collection("in_1", idempotency_key="k")
        with pytest.raises(BillingEngineError) as err:
            client.retry("in_1", idempotency_key="k")
    assert (err.value.status_code, err.value.code) == (422, "idempotency_key_reused")
    assert len(_txns(billing.engine, "in_1")) == 1


def test_unknown_invoice_is_404(billing):
    with _served(billing) as (_url, client):
        with pytest.raises(BillingEngineError) as get_err:
            client.get_invoice("in_missing")
        with pytest.raises(BillingEngineError) as post_err:
            client.retry("in_missing", idempotency_key="k")
    assert get_err.value.status_code == post_err.value.status_code == 404
    assert "in_missing" in post_err.value.message


def test_retrying_an_invoice_that_is_not_open_is_409(billing):
    _add_invoice(billing.engine, "in_paid", status="paid", decline_code=None)
    with _served(billing) as (_url, client):
        with pytest.raises(BillingEngineError) as err:
            client.retry("in_paid", idempotency_key="k")
    assert err.value.status_code == 409 and "paid" in err.value.message
    assert len(_txns(billing.engine, "in_paid")) == 1


def test_missing_or_wrong_api_key_is_401(billing):
    _add_invoice(billing.engine, "in_1")
    with _served(billing) as (url, _client):
        missing = httpx.post(f"{url}/invoices/in_1/retry", headers={"Idempotency-Key": "k"})
        wrong = httpx.get(f"{url}/invoices/in_1", headers={"X-API-Key": "nope"})
        health = httpx.get(f"{url}/healthz")
    assert missing.status_code == wrong.status_code == 401
    assert health.status_code == 200
    assert len(_txns(billing.engine, "in_1")) == 1


def test_actions_without_an_idempotency_key_or_with_bad_input_are_422(billing):
    _add_invoice(billing.engine, "in_1")
    with _served(billing) as (url, client):
        no_key = httpx.post(f"{url}/invoices/in_1/retry", headers={"X-API-Key": KEY})
        bad_json = httpx.post(f"{url}/invoices/in_1/mark-paid", content=b"{not json",
                              headers={"X-API-Key": KEY, "Idempotency-Key": "k1"})
        no_ext = httpx.post(f"{url}/invoices/in_1/mark-paid", json={},
                            headers={"X-API-Key": KEY, "Idempotency-Key": "k2"})
    assert no_key.status_code == bad_json.status_code == no_ext.status_code == 422
    assert "Idempotency-Key" in no_key.json()["error"]["message"]
    assert "external_transaction_id" in no_ext.json()["error"]["message"]
    assert _invoice(billing.engine, "in_1").status == "open"


def test_mark_paid_records_the_providers_external_transaction(billing):
    _add_invoice(billing.engine, "in_1")
    with _served(billing) as (_url, client):
        body = client.mark_paid("in_1", "prov_txn_42", idempotency_key="k")
        fetched = client.get_invoice("in_1")
    txns = _txns(billing.engine, "in_1")
    assert [(t.status, t.gateway_transaction_id) for t in txns][-1] == ("succeeded", "prov_txn_42")
    assert body["invoice"]["status"] == fetched["invoice"]["status"] == "paid"
    assert len(fetched["transactions"]) == 2


def test_complete_dunning_marks_the_invoice_uncollectible_and_cancels_the_subscription(billing):
    _add_invoice(billing.engine, "in_1")
    with _served(billing) as (_url, client):
        body = client.complete_dunning("in_1", idempotency_key="k")
    inv = _invoice(billing.engine, "in_1")
    with billing.engine.connect() as c:
        sub = c.execute(sa.select(subscriptions).where(subscriptions.c.subscription_id == "sub_in_1")).one()
    assert (inv.status, bdb.as_utc(inv.dunning_complete_at)) == ("uncollectible", NOW)
    assert body["invoice"]["status"] == "uncollectible"
    assert (sub.status, bdb.as_utc(sub.dunning_complete_at)) == ("canceled", NOW)


def test_payment_method_update_lets_an_expired_card_invoice_be_recovered(billing):
    gw = Gateway(SEED)
    iid = _find_invoice_id(lambda i: gw.customer_updates_payment_method(i) and gw.charge(
        invoice_id=i, attempt_number=2, previous_decline_code="expired_card",
        payment_method_updated=True).succeeded)
    _add_invoice(billing.engine, iid, decline_code="expired_card")
    with _served(billing) as (_url, client):
        upd = client.request_payment_method_update(iid, idempotency_key="u", card_update_url="https://pay.example/u/1")
        retried = client.retry(iid, idempotency_key="r")
    assert upd["card_update_url"] == "https://pay.example/u/1"
    assert upd["invoice"]["payment_method_update_requested_at"] is not None
    assert retried["transaction"]["status"] == "succeeded"
    assert retried["transaction"]["payment_method_token"] not in (None, "pm_old")


def test_own_retries_skip_handed_off_and_paused_invoices(billing):
    for iid in ("in_handed", "in_paused", "in_own"):
        _add_invoice(billing.engine, iid, decline_code="insufficient_funds")
    with _served(billing) as (_url, client):
        client.hand_off("in_handed", idempotency_key="h")
        client.pause_collection("in_paused", idempotency_key="p")
    acted = billing.run_own_retries(NOW)
    assert [a["invoice_id"] for a in acted] == ["in_own"]
    assert len(_txns(billing.engine, "in_own")) == 2
    assert len(_txns(billing.engine, "in_handed")) == len(_txns(billing.engine, "in_paused")) == 1
    # a second cycle at the same moment does not retry again (attempt too recent, key reused)
    assert billing.run_own_retries(NOW) == []


def test_own_retries_end_dunning_after_the_last_attempt(billing):
    _add_invoice(billing.engine, "in_1", decline_code="lost_card", attempts=4,
                 last_attempt_at=NOW - timedelta(days=4))
    acted = billing.run_own_retries(NOW)
    assert acted == [{"invoice_id": "in_1", "action": "complete_dunning", "status": "uncollectible"}]
    assert len(_txns(billing.engine, "in_1")) == 4


def test_retry_and_idempotency_on_a_postgres_billing_database(pg_url):
    engine = bdb.create_billing_engine(pg_url)
    bdb.init_billing_db(engine)
    billing = BillingEngine(engine, gateway=Gateway(SEED), clock=lambda: NOW)
    _add_invoice(engine, "in_pg", decline_code="do_not_honor")
    try:
        with _served(billing) as (url, _client):
            results = []

            def go():
                with BillingEngineClient(url, KEY) as c:
                    results.append(c.retry("in_pg", idempotency_key="pg-key"))

            threads = [threading.Thread(target=go) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        txns = _txns(engine, "in_pg")
        assert len(results) == 4 and all(r == results[0] for r in results)
        assert [t.attempt_number for t in txns] == [1, 2]
        assert _invoice(engine, "in_pg").attempt_count == 2
    finally:
        engine.dispose()
