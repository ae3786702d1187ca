"""The webhook receiver over HTTP (real uvicorn on a loopback port, SQLite ops store in tmp_path)."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from recovery_pipeline.webhooks import signing

from ._webhook_support import SECRETS, SLICKER_BASIC, delivery, inbox_rows, receiver, rejection_rows

PROVIDERS = ["slicker", "revtain", "butter", "standard", "stripe"]


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'ops.sqlite'}"


def test_valid_delivery_is_stored_and_acknowledged_for_every_provider(db_url):
    bodies = {}
    with receiver(db_url) as c:
        for provider in PROVIDERS:
            body, headers = delivery(provider, f"evt_{provider}_1", event_type="some.type")
            r = c.post(f"/webhooks/{provider}", content=body, headers=headers)
            assert r.status_code == 200, provider
            assert r.json() == {"success": True, "message": "stored", "duplicate": False,
                                "event_id": f"evt_{provider}_1"}
            bodies[provider] = body.decode()
    rows = inbox_rows(db_url)
    assert [(x["provider"], x["event_id"], x["status"]) for x in rows] == [
        (p, f"evt_{p}_1", "pending") for p in PROVIDERS]
    assert {x["provider"]: x["body"] for x in rows} == bodies


def test_tampered_body_is_rejected_401_and_not_stored(db_url):
    signed = ["revtain", "butter", "standard", "stripe"]
    with receiver(db_url) as c:
        for provider in signed:
            body, headers = delivery(provider, "evt_t1")
            r = c.post(f"/webhooks/{provider}", content=body.replace(b"in_", b"xx_"), headers=headers)
            assert r.status_code == 401, provider
    assert inbox_rows(db_url) == []
    assert sorted((x["provider"], x["status_code"]) for x in rejection_rows(db_url)) == sorted(
        (p, 401) for p in signed)


def test_wrong_secret_is_rejected_401(db_url):
    with receiver(db_url) as c:
        for provider in PROVIDERS:
            wrong = "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ==" if provider == "standard" else "wrong-secret"
            body, headers = delivery(provider, "evt_w1", secret=wrong)
            assert c.post(f"/webhooks/{provider}", content=body, headers=headers).status_code == 401, provider
    assert inbox_rows(db_url) == []


def test_missing_signature_header_is_rejected_401(db_url):
    cases = [("slicker", "Authorization"), ("revtain", signing.REVTAIN_SIGNATURE),
             ("butter", signing.BUTTER_SIGNATURE), ("butter", signing.BUTTER_EXPIRES),
             ("standard", "webhook-signature"), ("standard", "webhook-timestamp"),
             ("stripe", signing.STRIPE_SIGNATURE)]
    with receiver(db_url) as c:
        for provider, header in cases:
            body, headers = delivery(provider, "evt_m1")
            headers.pop(header)
            assert c.post(f"/webhooks/{provider}", content=body, headers=headers).status_code == 401, header
    assert inbox_rows(db_url) == []
    assert len(rejection_rows(db_url)) == len(cases)


def test_stale_or_expired_delivery_is_rejected_401(db_url):
    with receiver(db_url) as c:
        for provider in ["butter", "standard", "stripe"]:
            body, headers = delivery(provider, "evt_s1", now=time.time() - 3600)  # signed an hour ago
            assert c.post(f"/webhooks/{provider}", content=body, headers=headers).status_code == 401, provider
    assert inbox_rows(db_url) == []
    reasons = [r["reason"] for r in rejection_rows(db_url)]
    assert len(reasons) == 3 and all("expired" in r or "tolerance" in r for r in reasons)


def test_slicker_basic_auth_is_accepted_when_configured(db_url):
    body, _ = delivery("slicker", "evt_b1")
    headers = signing.signed_headers("slicker", None, body, basic=SLICKER_BASIC)
    with receiver(db_url) as c:
        assert c.post("/webhooks/slicker", content=body, headers=headers).status_code == 200


def test_slicker_pause_variants_and_unknown_types_are_stored(db_url):
    types = ["pause_collection", "pause_invoice", "something_new_v9"]
    with receiver(db_url) as c:
        for event_type in types:
            body, headers = delivery("slicker", f"evt_{event_type}", event_type=event_type)
            assert c.post("/webhooks/slicker", content=body, headers=headers).status_code == 200
    assert [r["event_type"] for r in inbox_rows(db_url)] == types


def test_malformed_json_with_valid_signature_is_400(db_url):
    body = b'{"id": "evt_bad", "event": '
    headers = signing.signed_headers("revtain", SECRETS["revtain"], body)
    with receiver(db_url) as c:
        r = c.post("/webhooks/revtain", content=body, headers=headers)
    assert r.status_code == 400
    assert inbox_rows(db_url) == []
    assert [x["status_code"] for x in rejection_rows(db_url)] == [400]


def test_stripe_event_without_id_is_400(db_url):
    body = json.dumps({"type": "invoice.paid"}).encode()
    headers = signing.signed_headers("stripe", SECRETS["stripe"], body)
    with receiver(db_url) as c:
        assert c.post("/webhooks/stripe", content=body, headers=headers).status_code == 400


def test_revtain_id_fallbacks_event_id_field_then_header_then_body_hash(db_url):
    sent = []
    with receiver(db_url) as c:
        for doc, event_id in [({"eventId": "ev_field", "type": "card.updated"}, None),
                              ({"event": "card.expiring_soon"}, "ev_header"),
                              ({"event": "recovery.failed", "invoiceId": "in_9"}, None)]:
            body = json.dumps(doc).encode()
            headers = signing.signed_headers("revtain", SECRETS["revtain"], body, event_id=event_id)
            assert c.post("/webhooks/revtain", content=body, headers=headers).status_code == 200
            sent.append(body)
        # the hashed one redelivered: same id, stored once
        body = sent[-1]
        r = c.post("/webhooks/revtain", content=body,
                   headers=signing.signed_headers("revtain", SECRETS["revtain"], body))
        assert r.json()["duplicate"] is True
    ids = [r["event_id"] for r in inbox_rows(db_url)]
    assert ids[:2] == ["ev_field", "ev_header"] and ids[2].startswith("sha256:") and len(ids) == 3
    assert [r["event_type"] for r in inbox_rows(db_url)] == ["card.updated", "card.expiring_soon", "recovery.failed"]


def test_body_over_limit_is_413_and_nothing_stored(db_url):
    big = json.dumps({"id": "evt_big", "event": "recovery.success", "pad": "x" * 5000}).encode()
    headers = signing.signed_headers("revtain", SECRETS["revtain"], big)
    with receiver(db_url, max_body_bytes=4096) as c:
        r = c.post("/webhooks/revtain", content=big, headers=headers)
        assert r.status_code == 413

        def chunks():  # no Content-Length: the limit holds while streaming
            for i in range(0, len(big), 1000):
                yield big[i:i + 1000]
        r2 = c.post("/webhooks/revtain", content=chunks(), headers=headers)
        assert r2.status_code == 413
    assert inbox_rows(db_url) == []
    assert [x["status_code"] for x in rejection_rows(db_url)] == [413, 413]


def test_non_json_content_type_is_415(db_url):
    body, headers = delivery("revtain", "evt_ct")
    headers["Content-Type"] = "text/plain"
    with receiver(db_url) as c:
        assert c.post("/webhooks/revtain", content=body, headers=headers).status_code == 415
    assert inbox_rows(db_url) == []


def test_unknown_provider_is_404(db_url):
    with receiver(db_url) as c:
        r = c.post("/webhooks/acme", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 404


def test_same_event_delivered_three_times_is_stored_once(db_url):
    with receiver(db_url) as c:
        for provider in PROVIDERS:
            answers = []
            for _ in range(3):  # each redelivery freshly signed, as providers do
                body, headers = delivery(provider, "evt_dup")
                answers.append(c.post(f"/webhooks/{provider}", content=body, headers=headers).json())
            assert [a["duplicate"] for a in answers] == [False, True, True], provider
            assert all(a["success"] for a in answers)
    assert sorted((r["provider"], r["event_id"]) for r in inbox_rows(db_url)) == sorted(
        (p, "evt_dup") for p in PROVIDERS)


def test_stored_headers_hold_no_secret_token_or_signature(db_url):
    sent = []
    with receiver(db_url) as c:
        for provider in PROVIDERS:
            body, headers = delivery(provider, f"evt_r_{provider}")
            assert c.post(f"/webhooks/{provider}", content=body, headers=headers).status_code == 200
            sent.append(headers)
        body, _ = delivery("slicker", "evt_r_basic")
        basic = signing.signed_headers("slicker", None, body, basic=SLICKER_BASIC)
        assert c.post("/webhooks/slicker", content=body, headers=basic).status_code == 200
        sent.append(basic)
    rows = inbox_rows(db_url)
    assert len(rows) == 6
    dump = json.dumps(rows, default=str)
    secret_values = [*SECRETS.values(), SLICKER_BASIC]
    signature_values = [v.split(" ", 1)[-1] for h in sent for k, v in h.items()
                        if k.lower() in signing.SENSITIVE_HEADERS]
    assert len(signature_values) == 6
    for value in secret_values + signature_values:
        assert value not in dump
    assert all(json.loads(r["headers_json"]).get(k) == signing.REDACTED for r in rows
               for k in json.loads(r["headers_json"]) if k in signing.SENSITIVE_HEADERS)


def test_store_unavailable_answers_503_and_acknowledges_nothing(db_url):
    body, headers = delivery("revtain", "evt_down")
    with receiver(db_url) as c:
        eng = sa.create_engine(db_url)
        with eng.begin() as conn:
            conn.execute(sa.text("DROP TABLE webhook_inbox"))
        r = c.post("/webhooks/revtain", content=body, headers=headers)
        assert r.status_code == 503 and r.json()["success"] is False
        # the store comes back: the provider's retry is stored and acknowledged
        from recovery_pipeline.opsstore.store import init_ops_store
        init_ops_store(eng)
        eng.dispose()
        r = c.post("/webhooks/revtain", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["duplicate"] is False
    assert [x["event_id"] for x in inbox_rows(db_url)] == ["evt_down"]


def test_openapi_document_describes_the_routes_and_healthz_is_up(db_url):
    with receiver(db_url) as c:
        doc = c.get("/openapi.json").json()
        health = c.get("/healthz").json()
    assert doc["openapi"].startswith("3.")
    op = doc["paths"]["/webhooks/{provider}"]["post"]
    assert set(op["responses"]) == {"200", "400", "401", "404", "413", "415", "503"}
    assert op["parameters"][0]["schema"]["enum"] == PROVIDERS
    assert health["status"] == "ok" and health["providers"] == PROVIDERS
    assert set(health["writer"]) == {"kind", "pid", "batches", "items", "rows", "commit_seconds"}
    assert health["writer"]["kind"] == "process"  # the default: commits run in a child process


def test_echo_route_exists_only_with_bench_flag(db_url):
    with receiver(db_url) as c:
        for path in ("/echo", "/echo-asgi"):
            assert c.post(path, content=b"{}", headers={"content-type": "application/json"}).status_code == 404
    with receiver(db_url, echo=True) as c:
        for path in ("/echo", "/echo-asgi"):  # the Starlette route and the raw ASGI one
            assert c.post(path, content=b"{}", headers={"content-type": "application/json"}).status_code == 200
    assert inbox_rows(db_url) == []
