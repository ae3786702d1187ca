"""The sandbox delivers signed webhooks to the receiver URL and retries on non-2xx."""

from __future__ import annotations

import json
import time

import httpx

from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.providers import get_adapter
from recovery_pipeline.providers.base import wire
from recovery_pipeline.providers.synthetic import generate
from recovery_pipeline.webhooks import signing
from recovery_pipeline_tests.provider_fixtures import API_KEY, Recorder, start_sandbox

SECRETS = {"slicker": "tok-test", "revtain": "whsec_test_revtain", "butter": "butter-test"}


def _failed_open_invoice() -> tuple[dict, dict]:
    data = generate(12, seed=2, failure_rate=1.0)
    inv = next(i for i in data["invoices"] if i["status"] == "open")
    txn = next(t for t in data["transactions"] if t["invoice_id"] == inv["invoice_id"])
    return inv, txn


def _wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _push_failure(url: str) -> None:
    inv, txn = _failed_open_invoice()
    h = {"Authorization": f"Bearer {API_KEY}"}
    a = get_adapter("slicker")
    httpx.post(f"{url}/v1/invoices", json=[wire("invoices", a, inv)], headers=h).raise_for_status()
    httpx.post(f"{url}/v1/transactions", json=[wire("transactions", a, txn)], headers=h).raise_for_status()


def test_slicker_webhook_is_delivered_with_bearer_auth_and_envelope():
    rec = Recorder()
    with serve_in_thread(rec.app()) as receiver, start_sandbox(
            webhook_url=receiver, webhook_secrets=SECRETS) as url:
        _push_failure(url)
        assert _wait_for(lambda: rec.calls)
    call = rec.calls[0]
    assert call["path"] == "/webhooks/slicker"
    signing.verify("slicker", call["headers"], call["body"], token="tok-test")
    event = json.loads(call["body"])
    assert set(event) == {"id", "type", "created", "data"}
    assert event["type"] in ("recovery_action", "pause_collection", "complete_dunning")


def test_a_non_2xx_answer_is_retried_until_delivered():
    rec = Recorder(statuses=[500, 503])
    with serve_in_thread(rec.app()) as receiver, start_sandbox(
            webhook_url=receiver, webhook_secrets=SECRETS, time_scale=0.001) as url:
        _push_failure(url)
        assert _wait_for(lambda: len(rec.calls) >= 3)
        outbox = httpx.get(f"{url}/sandbox/outbox").json()
    assert len({json.loads(c["body"])["id"] for c in rec.calls}) == 1  # one event, three attempts
    assert outbox[0]["status"] == "delivered" and outbox[0]["attempts"] == 3


def test_revtain_events_are_hmac_signed():
    rec = Recorder()
    with serve_in_thread(rec.app()) as receiver, start_sandbox(
            webhook_url=receiver, webhook_secrets=SECRETS, deliver_in_background=False) as url:
        httpx.post(f"{url}/api/recovery/execute", headers={"X-API-KEY": API_KEY}, json={
            "paymentMethodToken": "pm_1", "amount": 500, "currency": "USD",
            "originalDeclineCode": "do_not_honor", "idempotencyKey": "in_1"}).raise_for_status()
        httpx.post(f"{url}/sandbox/events", json={
            "provider": "revtain", "type": "card.expiring_soon",
            "data": {"customerId": "cus_1", "cardUpdateUrl": "https://x"}}).raise_for_status()
        assert httpx.post(f"{url}/sandbox/deliver").json()["delivered"] == 2
    types = []
    for call in rec.calls:
        signing.verify("revtain", call["headers"], call["body"], "whsec_test_revtain")
        types.append(json.loads(call["body"])["type"])
    assert types[0] in ("recovery.success", "recovery.failed") and types[1] == "card.expiring_soon"
    tampered = dict(rec.calls[0]["headers"])
    try:
        signing.verify("revtain", tampered, rec.calls[0]["body"] + b" ", "whsec_test_revtain")
        raise AssertionError("a tampered body must not verify")
    except signing.SignatureError:
        pass


def test_butter_end_of_dunning_is_signed_with_expiry():
    rec = Recorder()
    data = generate(3, seed=9, failure_rate=1.0)
    txn = dict(data["transactions"][0], decline_code="fraudulent", status="failed")
    with serve_in_thread(rec.app()) as receiver, start_sandbox(
            webhook_url=receiver, webhook_secrets=SECRETS, deliver_in_background=False) as url:
        item = wire("transactions", get_adapter("butter"), txn)
        httpx.post(f"{url}/recover/payments", json={"payments": [item]},
                   headers={"x-api-key": API_KEY}).raise_for_status()
        httpx.post(f"{url}/sandbox/deliver").raise_for_status()
    call = rec.calls[0]
    signing.verify("butter", call["headers"], call["body"], "butter-test")
    body = json.loads(call["body"])
    assert body["invoice_id"] == txn["invoice_id"] and body["recovered"] is False
    assert call["headers"]["x-butter-webhook-type"] == "end_of_dunning"


def test_delivery_gives_up_after_the_schedule():
    from recovery_pipeline.provider_sandbox.delivery import SCHEDULES, next_delay

    assert next_delay("revtain", 1, 1.0) == 2 and next_delay("revtain", 2, 1.0) == 8
    assert next_delay("butter", 1, 1.0) == 43200 and next_delay("butter", 1, 0.001) == 43.2
    assert next_delay("slicker", len(SCHEDULES["slicker"]), 1.0) is None
    assert sum(SCHEDULES["revtain"]) <= 24 * 3600


def test_webhook_faults_send_duplicates_and_shuffle_the_order():
    rec = Recorder()
    with serve_in_thread(rec.app()) as receiver, start_sandbox(
            webhook_url=receiver, webhook_secrets=SECRETS, deliver_in_background=False) as url:
        for i in range(12):
            httpx.post(f"{url}/sandbox/events", json={"provider": "revtain", "type": "card.updated",
                                                       "id": f"evt_{i:02d}", "data": {"n": i}})
        httpx.post(f"{url}/sandbox/faults", json={"webhook_duplicate_fraction": 1.0,
                                                  "webhook_shuffle": True, "seed": 3})
        result = httpx.post(f"{url}/sandbox/deliver").json()
    ids = [json.loads(c["body"])["id"] for c in rec.calls]
    assert result["delivered"] == 12 and result["duplicates_sent"] == 12
    assert sorted(set(ids)) == [f"evt_{i:02d}" for i in range(12)] and len(ids) == 24
    firsts = list(dict.fromkeys(ids))
    assert firsts != sorted(firsts)  # out of order
