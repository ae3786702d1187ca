"""The sandbox speaks Slicker ingest + recovery actions over HTTP, and answers counts."""

from __future__ import annotations

import httpx

from recovery_pipeline.providers import get_adapter
from recovery_pipeline.providers.base import wire
from recovery_pipeline.providers.synthetic import generate
from recovery_pipeline_tests.provider_fixtures import API_KEY, sandbox, start_sandbox, stats  # noqa: F401

H = {"Authorization": f"Bearer {API_KEY}"}
DATA = generate(30, seed=11)
SLICKER = get_adapter("slicker")


def _items(entity: str, n: int | None = None) -> list[dict]:
    rows = DATA[entity] if n is None else DATA[entity][:n]
    return [wire(entity, SLICKER, r) for r in rows]


def test_batch_over_the_item_limit_is_rejected(sandbox):
    items = _items("invoices") * 4  # 120 > 100
    r = httpx.post(f"{sandbox}/v1/invoices", json={"invoices": items[:101]}, headers=H)
    assert r.status_code == 400 and r.json()["limit"] == 100 and r.json()["requestId"]
    assert stats(sandbox)["records_by_entity"] == {}


def test_missing_field_and_bad_enum_give_field_errors(sandbox):
    bad = dict(_items("transactions", 1)[0], state="PAID")
    del bad["invoiceId"]
    r = httpx.post(f"{sandbox}/v1/transactions", json={"transactions": [bad]}, headers=H)
    fields = {e["field"] for e in r.json()["fieldErrors"]}
    assert r.status_code == 400 and fields == {"invoiceId", "state"}


def test_wrong_bearer_token_is_401(sandbox):
    r = httpx.post(f"{sandbox}/v1/invoices", json={"invoices": []},
                   headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_a_repeated_record_never_counts_twice(sandbox):
    items = _items("invoices", 5)
    for _ in range(2):
        r = httpx.post(f"{sandbox}/v1/invoices", json={"invoices": items}, headers=H)
        assert r.status_code == 200 and r.json()["requestId"].startswith("req_")
    s = stats(sandbox)
    assert s["records_by_entity"]["invoices"] == 5 and s["duplicates_seen"] == 5
    changed = dict(items[0], amount=items[0]["amount"] + 1)
    r = httpx.post(f"{sandbox}/v1/invoices", json=[changed], headers=H)
    assert r.json()["updated"] == 1 and stats(sandbox)["duplicates_seen"] == 5


def test_over_the_rate_limit_answers_429_with_retry_after():
    with start_sandbox(requests_per_second=2) as url:
        codes = [httpx.post(f"{url}/v1/invoices", json={"invoices": []}, headers=H) for _ in range(6)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and all(int(r.headers["Retry-After"]) >= 1 for r in limited)


def test_card_numbers_are_refused(sandbox):
    item = dict(_items("transactions", 1)[0], cardFingerprint="4111111111111111")
    r = httpx.post(f"{sandbox}/v1/transactions", json=[item], headers=H)
    assert r.status_code == 400 and "4111111111111111" not in r.text


def test_recovery_actions_page_with_token_total_and_filters(sandbox):
    for e in ("subscriptions", "invoices", "transactions"):
        assert httpx.post(f"{sandbox}/v1/{e}", json={e: _items(e)}, headers=H).status_code == 200
    first = httpx.get(f"{sandbox}/v1/recovery_actions", params={"pageSize": 2}, headers=H).json()
    total = first["totalSize"]
    assert total >= 3 and len(first["recoveryActions"]) == 2 and first["nextPageToken"]
    seen, token = [], ""
    while True:
        page = httpx.get(f"{sandbox}/v1/recovery_actions", headers=H,
                         params={"pageSize": 2, "pageToken": token} if token else {"pageSize": 2}).json()
        seen += [a["requestId"] for a in page["recoveryActions"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == total
    inv = first["recoveryActions"][0]["invoiceId"]
    only = httpx.get(f"{sandbox}/v1/recovery_actions", params={"invoiceId": inv}, headers=H).json()
    assert only["totalSize"] >= 1 and {a["invoiceId"] for a in only["recoveryActions"]} == {inv}
    by_time = httpx.get(f"{sandbox}/v1/recovery_actions", headers=H, params={
        "orderBy": "RECOVERY_ACTION_ORDER_BY_IDEAL_RETRY_TIME", "pageSize": 100}).json()
    times = [a["idealRetryTime"] or "" for a in by_time["recoveryActions"]]
    assert times == sorted(times)


def test_counts_by_month_currency_country_and_outcome(sandbox):
    for e in ("subscriptions", "invoices", "transactions"):
        httpx.post(f"{sandbox}/v1/{e}", json={e: _items(e)}, headers=H).raise_for_status()
    counts = httpx.get(f"{sandbox}/sandbox/counts").json()
    months = counts["months"]
    for month, m in months.items():
        invs = [i for i in DATA["invoices"] if i["month"] == month]
        txns = [t for t in DATA["transactions"] if t["created_at"].strftime("%Y-%m") == month]
        assert m["invoices"] == len(invs) and m["transactions"] == len(txns)
        assert m["failed_transactions"] == sum(t["status"] == "failed" for t in txns)
        assert sum(m["invoices_by_currency"].values()) == len(invs)
        assert m["invoices_by_country"].get("US", 0) == sum(i["customer_country"] == "US" for i in invs)
        assert sum(m["outcomes"].values()) == len(invs)
    paid_after = {t["invoice_id"] for t in DATA["transactions"] if t["status"] == "failed"} & {
        i["invoice_id"] for i in DATA["invoices"] if i["status"] == "paid"}
    assert sum(m["outcomes"]["paid_after_failure"] for m in months.values()) == len(paid_after)
    assert counts["totals"]["invoices"] == len(DATA["invoices"])


def test_a_deleted_record_leaves_the_counts(sandbox):
    items = _items("invoices", 3)
    httpx.post(f"{sandbox}/v1/invoices", json={"invoices": items}, headers=H).raise_for_status()
    r = httpx.post(f"{sandbox}/sandbox/records/invoices/{items[0]['id']}/delete")
    assert r.json() == {"deleted": True}
    assert httpx.get(f"{sandbox}/sandbox/counts").json()["totals"]["invoices"] == 2


def test_openapi_document_lists_the_provider_routes(sandbox):
    doc = httpx.get(f"{sandbox}/openapi.json").json()
    for path in ("/v1/invoices", "/v1/recovery_actions", "/api/recovery/execute",
                 "/api/recovery/status", "/recover/payments", "/sandbox/counts", "/sandbox/faults"):
        assert path in doc["paths"]
    assert "409" in doc["paths"]["/api/recovery/execute"]["post"]["responses"]
