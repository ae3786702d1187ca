"""The receiver on a PostgreSQL ops store (same code path, RETURNING-based dedupe)."""

from __future__ import annotations

import asyncio

import pytest

from ._webhook_support import delivery, inbox_rows, post_many, receiver, rejection_rows


@pytest.mark.postgres
def test_postgres_store_keeps_each_concurrent_duplicate_once_and_records_rejections(pg_url):
    requests = []
    for _ in range(3):
        for i in range(100):
            body, headers = delivery("stripe", f"evt_pg_{i}")
            requests.append(("/webhooks/stripe", body, headers))
    bad_body, bad_headers = delivery("stripe", "evt_pg_bad", secret="whsec_wrong")
    with receiver(pg_url) as c:
        codes = asyncio.run(post_many(str(c.base_url).rstrip("/"), requests, concurrency=16))
        assert c.post("/webhooks/stripe", content=bad_body, headers=bad_headers).status_code == 401
        again = c.post("/webhooks/stripe", content=requests[0][1], headers=requests[0][2]).json()
    assert codes == [200] * 300
    assert again["duplicate"] is True
    rows = inbox_rows(pg_url)
    assert sorted(r["event_id"] for r in rows) == sorted(f"evt_pg_{i}" for i in range(100))
    assert rows[0]["received_at"].tzinfo is not None
    assert [(r["provider"], r["status_code"]) for r in rejection_rows(pg_url)] == [("stripe", 401)]
