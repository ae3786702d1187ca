"""Revtain execute: idempotency (409), blocked codes (403), per-minute limit, card update links."""

from __future__ import annotations

import httpx

from recovery_pipeline_tests.provider_fixtures import API_KEY, sandbox, start_sandbox, stats  # noqa: F401

H = {"X-API-KEY": API_KEY}


def _body(key: str, code: str = "do_not_honor", token: str = "pm_1", amount: int = 1500, **kw) -> dict:
    return {"paymentMethodToken": token, "amount": amount, "currency": "EUR",
            "originalDeclineCode": code, "idempotencyKey": key, "customerPresent": False,
            "isTrialConversion": False, **kw}


def test_a_reused_key_answers_409_with_the_existing_transaction_and_charges_once(sandbox):
    first = httpx.post(f"{sandbox}/api/recovery/execute", json=_body("in_1"), headers=H)
    again = httpx.post(f"{sandbox}/api/recovery/execute", json=_body("in_1", token="pm_2"), headers=H)
    assert first.status_code == 200 and again.status_code == 409
    assert again.json()["existingTransactionId"] == first.json()["transactionId"]
    assert stats(sandbox)["revtain"]["charges"] == 1


def test_same_card_and_amount_within_five_minutes_is_a_duplicate(sandbox):
    httpx.post(f"{sandbox}/api/recovery/execute", json=_body("in_a"), headers=H).raise_for_status()
    r = httpx.post(f"{sandbox}/api/recovery/execute", json=_body("in_b"), headers=H)
    assert r.status_code == 409 and r.json()["reason"] == "same_card_amount"
    other = httpx.post(f"{sandbox}/api/recovery/execute", json=_body("in_c", amount=999), headers=H)
    assert other.status_code == 200


def test_blocked_decline_codes_answer_403(sandbox):
    for i, code in enumerate(("fraudulent", "lost_card", "pickup_card", "authentication_required",
                              "stolen_card")):
        r = httpx.post(f"{sandbox}/api/recovery/execute",
                       json=_body(f"in_{i}", code=code, token=f"pm_{i}"), headers=H)
        assert r.status_code == 403, code
    assert stats(sandbox)["revtain"]["charges"] == 0


def test_customer_present_fixable_decline_gets_a_card_update_url(sandbox):
    r = httpx.post(f"{sandbox}/api/recovery/execute",
                   json=_body("in_x", code="expired_card", customerPresent=True), headers=H)
    assert r.status_code == 200 and r.json()["success"] is False and r.json()["cardUpdateUrl"]
    absent = httpx.post(f"{sandbox}/api/recovery/execute",
                        json=_body("in_y", code="expired_card", token="pm_9"), headers=H)
    assert "cardUpdateUrl" not in absent.json()


def test_insufficient_funds_is_queued_and_status_reports_it(sandbox):
    r = httpx.post(f"{sandbox}/api/recovery/execute", json=_body("in_q", code="insufficient_funds"),
                   headers=H)
    assert r.status_code == 202 and r.json()["status"] == "queued"
    s = httpx.get(f"{sandbox}/api/recovery/status", params={"idempotencyKey": "in_q"}, headers=H)
    assert s.json()["status"] == "queued" and s.json()["transactionId"] == r.json()["transactionId"]
    assert httpx.get(f"{sandbox}/api/recovery/status", params={"idempotencyKey": "nope"},
                     headers=H).status_code == 404


def test_over_sixty_a_minute_per_key_is_429():
    with start_sandbox(revtain_per_minute=3) as url:
        codes = [httpx.post(f"{url}/api/recovery/execute", json=_body(f"k{i}", token=f"pm_{i}"),
                            headers=H).status_code for i in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


def test_idempotency_key_longer_than_128_is_400(sandbox):
    r = httpx.post(f"{sandbox}/api/recovery/execute", json=_body("k" * 129), headers=H)
    assert r.status_code == 400


def test_butter_payments_are_held_and_counted(sandbox):
    from recovery_pipeline.providers import get_adapter
    from recovery_pipeline.providers.base import wire
    from recovery_pipeline.providers.synthetic import generate

    data = generate(9, seed=5)
    items = [wire("transactions", get_adapter("butter"), t) for t in data["transactions"]]
    r = httpx.post(f"{sandbox}/recover/payments", json={"payments": items},
                   headers={"x-api-key": API_KEY})
    assert r.status_code == 200
    totals = httpx.get(f"{sandbox}/sandbox/counts").json()["totals"]
    assert totals["transactions"] == len(data["transactions"]) and totals["invoices"] == 9
