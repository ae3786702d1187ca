"""The push engine's fast paths keep the slow paths' meaning: the payload hash, the card-number
refusal, the ledger on SQLite and PostgreSQL, the rate limiter's schedule, the sandbox upsert."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import push_ledger
from recovery_pipeline.provider_sandbox.store import SandboxStore
from recovery_pipeline.providers import http as provider_http
from recovery_pipeline.providers.base import (
    CardNumberRefused,
    canonical_json,
    get_adapter,
    hash_and_check,
    luhn_ok,
    payload_hash,
    wire,
    wire_hashed,
)
from recovery_pipeline.providers.push import _ledger_hashes, _write_ledger
from recovery_pipeline.providers.synthetic import generate


def _json_module_hash(item) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


def test_payload_hash_matches_the_json_module_so_older_ledgers_keep_matching():
    data = generate(30, seed=3)
    for name in ("slicker", "revtain", "butter"):
        adapter = get_adapter(name)
        for entity, rows in data.items():
            if adapter.ingest_path(entity) is None:
                continue
            for row in rows:
                if adapter.include(entity, row):
                    item, h = wire_hashed(entity, adapter, row)
                    assert h == payload_hash(item) == _json_module_hash(item)
    odd = {"name": "Zoë", "n": 2**70, "nested": [{"b": 1, "a": None}], "flag": True}
    assert payload_hash(odd) == _json_module_hash(odd)


def _card_number(draw_digits: str) -> str:
    """Complete ``draw_digits`` with the Luhn check digit."""
    for d in "0123456789":
        if luhn_ok(draw_digits + d):
            return draw_digits + d
    raise AssertionError("unreachable")


plain = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                  st.text(max_size=20))


@settings(max_examples=150, deadline=None)
@given(body=st.integers(10**10, 10**17), sep=st.sampled_from(["", " ", "-"]),
       as_int=st.booleans(), filler=st.dictionaries(st.text(max_size=8), plain, max_size=5),
       key=st.text(min_size=1, max_size=8), nested=st.booleans())
def test_the_card_number_pre_filter_never_lets_one_through(body, sep, as_int, filler, key, nested):
    number = _card_number(str(body))
    value = int(number) if as_int else sep.join(number[i:i + 4] for i in range(0, len(number), 4))
    item = dict(filler)
    item[key] = {"inner": [value]} if nested else value
    with pytest.raises(CardNumberRefused):
        hash_and_check(item)


@settings(max_examples=100, deadline=None)
@given(item=st.dictionaries(st.text(max_size=10), plain, max_size=8))
def test_hash_and_check_agrees_with_wire_and_payload_hash(item):
    try:
        wire("x", _Identity(), item)
    except CardNumberRefused:
        with pytest.raises(CardNumberRefused):
            hash_and_check(item)
        return
    assert hash_and_check(item) == payload_hash(item) == hashlib.sha256(
        canonical_json(item)).hexdigest()


class _Identity:
    name = "identity"

    def to_wire(self, entity, row):
        return row


def _ledger_roundtrip(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        _write_ledger(conn, "slicker", "invoices", ["in_1", "in_2"], ["h1", "h2"],
                      ["2026-01", None], "req_1")
        _write_ledger(conn, "slicker", "invoices", ["in_1"], ["h1b"], ["2026-02"], "req_2")
    with engine.connect() as conn:
        known = _ledger_hashes(conn, "slicker", "invoices", ["in_1", "in_2", "in_3"])
        rows = conn.execute(sa.select(push_ledger).order_by(push_ledger.c.record_id)).mappings().all()
    assert known == {"in_1": "h1b", "in_2": "h2"}
    assert [(r["record_id"], r["month"], r["request_id"]) for r in rows] == [
        ("in_1", "2026-02", "req_2"), ("in_2", None, "req_1")]
    assert all(r["pushed_at"] is not None and r["pushed_at"].year >= 2026 for r in rows)


def test_the_ledger_upsert_on_sqlite_updates_in_place_and_reads_back(tmp_path):
    engine = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(engine)
    _ledger_roundtrip(engine)
    engine.dispose()


def test_the_ledger_upsert_on_postgres_updates_in_place_and_reads_back(pg_url):
    engine = create_ops_engine(pg_url)
    init_ops_store(engine)
    _ledger_roundtrip(engine)
    engine.dispose()


class _FakeClock:
    """time.monotonic / time.sleep for the limiter; ``late`` is added to every sleep (a loaded
    machine waking threads late)."""

    def __init__(self, late: float = 0.0):
        self.now, self.late, self.lock = 100.0, late, threading.Lock()

    def monotonic(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds + self.late


def _starts(monkeypatch, clock: _FakeClock, n: int, rate: float, pause_at: int | None = None):
    monkeypatch.setattr(provider_http, "time", clock)
    bucket = provider_http.TokenBucket(rate)
    starts = []
    for i in range(n):
        if i == pause_at:
            bucket.pause(1.0)
        bucket.acquire()
        starts.append(clock.monotonic())
    return starts


def test_the_limiter_never_starts_two_requests_closer_than_its_rate(monkeypatch):
    starts = _starts(monkeypatch, _FakeClock(), 20, rate=10.0)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.1 - 1e-9


def test_a_late_wake_up_does_not_push_back_the_later_starts(monkeypatch):
    """Every sleep oversleeps by 10 ms: the schedule stays at the rate (20 starts in ~1.9 s +
    one oversleep), where a limiter counting from each wake-up would drift to 20 x 0.11 s."""
    starts = _starts(monkeypatch, _FakeClock(late=0.01), 20, rate=10.0)
    assert starts[-1] - starts[0] < 19 * 0.1 + 0.02


def test_a_pause_after_a_429_holds_back_the_next_start(monkeypatch):
    starts = _starts(monkeypatch, _FakeClock(), 6, rate=10.0, pause_at=3)
    assert starts[3] - starts[2] >= 1.0


def test_the_sandbox_upsert_counts_inserts_updates_and_duplicates_once():
    store = SandboxStore()

    def row(rid, h):
        return {"id": rid, "month": "2026-01", "created_at": "2026-01-01T00:00:00Z",
                "currency": "EUR", "country": "DE", "state": "paid", "billing_status": "paid",
                "invoice_id": None, "subscription_id": "sub_1", "decline_code": None,
                "amount": 100, "hash": h, "body": json.dumps({"id": rid, "h": h})}

    first = store.upsert_records("invoices", [row("in_1", "a"), row("in_2", "a"), row("in_1", "b")])
    again = store.upsert_records("invoices", [row("in_1", "b"), {"id": "in_3", "hash": "c",
                                                                  "body": "{}"}])
    assert first == {"inserted": 2, "updated": 1, "duplicates": 0}
    assert again == {"inserted": 1, "updated": 0, "duplicates": 1}
    assert store.records_by_entity() == {"invoices": 3}
    assert store.record("invoices", "in_1")["hash"] == "b"
