"""The push engine against the running sandbox: batches, 429 storms, retries, dead letters,
redrive, change detection, crash + re-run."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from recovery_pipeline.opsstore.models import dead_letters, push_ledger, request_log
from recovery_pipeline.opsstore.store import load_payload
from recovery_pipeline.providers.push import PushSettings, push_all, push_entity, redrive
from recovery_pipeline.providers.synthetic import chunks, generate
from recovery_pipeline_tests.provider_fixtures import (  # noqa: F401
    faults,
    make_client,
    ops_engine,
    sandbox,
    stats,
)

DATA = generate(120, seed=1)


def _read(data=DATA, size=70):
    return lambda entity: chunks(data[entity], size)


def _held(url: str) -> dict:
    return stats(url)["records_by_entity"]


def _expected(data=DATA) -> dict:
    return {e: len(rows) for e, rows in data.items()}


def test_batches_stay_within_the_item_limit(ops_engine, sandbox):
    with make_client(sandbox) as client:
        result = push_all(ops_engine, client, _read(), PushSettings(batch_size=25))
    s = stats(sandbox)
    assert s["max_items_in_request"] == 25 and s["batches_over_limit"] == 0
    assert result["invoices"].batches == 120 // 25 + 1
    assert _held(sandbox) == _expected()


def test_a_429_storm_is_absorbed_with_no_lost_or_duplicated_record(ops_engine, sandbox):
    faults(sandbox, burst_429=15, retry_after=0)
    with make_client(sandbox) as client:
        result = push_all(ops_engine, client, _read(), PushSettings(batch_size=20, concurrency=3))
    s = stats(sandbox)
    assert s["429s_sent"] >= 15 and sum(r.throttled for r in result.values()) >= 15
    assert _held(sandbox) == _expected() and s["duplicates_seen"] == 0
    assert sum(r.dead_letters for r in result.values()) == 0


def test_5xx_is_retried_then_dead_lettered_after_max_receive_count(ops_engine, sandbox):
    faults(sandbox, fraction_5xx=1.0, seed=1)
    with make_client(sandbox) as client:
        result = push_entity(ops_engine, client, "subscriptions", chunks(DATA["subscriptions"]),
                             PushSettings(batch_size=50, max_receive_count=3))
    assert result.dead_letters == 1 and result.records_sent == 0 and result.requests == 3
    with ops_engine.connect() as c:
        dl = c.execute(sa.select(dead_letters)).mappings().one()
        assert dl["attempts"] == 3 and "503" in dl["last_error"] and dl["status"] == "dead"
        assert load_payload(c, dl["payload_ref"]).startswith('{"subscriptions":[')
        assert c.execute(sa.select(sa.func.count()).select_from(push_ledger)).scalar() == 0


def test_timeouts_are_retried_and_the_push_goes_on(ops_engine, sandbox):
    faults(sandbox, fraction_timeouts=0.3, timeout_seconds=1.0, seed=4)
    with make_client(sandbox, timeout=0.2) as client:
        result = push_entity(ops_engine, client, "invoices", chunks(DATA["invoices"]),
                             PushSettings(batch_size=10, max_receive_count=6))
    assert stats(sandbox)["timeouts"] >= 1 and result.retries >= 1
    assert _held(sandbox)["invoices"] + result.dead_lettered_records == 120


def test_dropped_connections_are_retried(ops_engine, sandbox):
    faults(sandbox, fraction_drop=0.3, seed=2)
    with make_client(sandbox) as client:
        result = push_entity(ops_engine, client, "invoices", chunks(DATA["invoices"]),
                             PushSettings(batch_size=10, max_receive_count=8))
    assert stats(sandbox)["drops"] >= 1 and result.retries >= 1
    assert _held(sandbox)["invoices"] == 120 and result.dead_letters == 0


def test_redrive_replays_dead_letters_exactly_once(ops_engine, sandbox):
    faults(sandbox, fraction_5xx=1.0, seed=1)
    with make_client(sandbox) as client:
        push_all(ops_engine, client, _read(), PushSettings(batch_size=50, max_receive_count=2))
        faults(sandbox)  # provider healthy again
        first = redrive(ops_engine, client)
        second = redrive(ops_engine, client)
    assert first.redriven == 1 + 3 + 4 and first.still_dead == 0  # subs, invoices, transactions
    assert second.considered == 0 and second.redriven == 0
    assert _held(sandbox) == _expected() and stats(sandbox)["duplicates_seen"] == 0
    with ops_engine.connect() as c:
        assert {r[0] for r in c.execute(sa.select(dead_letters.c.status))} == {"redriven"}
        assert c.execute(sa.select(sa.func.count()).select_from(push_ledger)).scalar() == sum(
            _expected().values())


def test_redrive_goes_subscriptions_then_invoices_then_transactions(ops_engine, sandbox):
    faults(sandbox, fraction_5xx=1.0, seed=1)
    with make_client(sandbox) as client:
        for entity in ("transactions", "invoices", "subscriptions"):  # dead-lettered in reverse
            push_entity(ops_engine, client, entity, chunks(DATA[entity], 500),
                        PushSettings(batch_size=100, max_receive_count=1))
        faults(sandbox)
        redrive(ops_engine, client)
    with ops_engine.connect() as c:
        rows = c.execute(sa.select(request_log.c.endpoint).where(request_log.c.status_code == 200)
                         .order_by(request_log.c.id)).scalars().all()
    rank = {"/v1/subscriptions": 0, "/v1/invoices": 1, "/v1/transactions": 2}
    assert [rank[r] for r in rows] == sorted(rank[r] for r in rows) and len(set(rows)) == 3


def test_a_second_push_with_no_changes_sends_nothing(ops_engine, sandbox):
    with make_client(sandbox) as client:
        push_all(ops_engine, client, _read())
        before = stats(sandbox)["requests_seen"]
        again = push_all(ops_engine, client, _read())
    assert sum(r.records_sent for r in again.values()) == 0
    assert sum(r.unchanged for r in again.values()) == sum(_expected().values())
    assert stats(sandbox)["requests_seen"] == before


def test_one_changed_invoice_sends_one_record(ops_engine, sandbox):
    with make_client(sandbox) as client:
        push_all(ops_engine, client, _read())
        changed = {e: [dict(r) for r in rows] for e, rows in DATA.items()}
        changed["invoices"][7]["status"] = "uncollectible"
        again = push_all(ops_engine, client, _read(changed))
    assert again["invoices"].records_sent == 1 and again["invoices"].batches == 1
    assert again["subscriptions"].records_sent == again["transactions"].records_sent == 0
    held = httpx.get(f"{sandbox}/sandbox/counts").json()["totals"]["invoices"]
    assert held == 120


def test_a_push_killed_mid_way_and_rerun_leaves_no_duplicate(ops_engine, sandbox):
    class Killed(Exception):
        pass

    seen = []

    def kill_after_three(outcome):
        seen.append(outcome)
        if len(seen) == 3:
            raise Killed

    with make_client(sandbox) as client:
        with pytest.raises(Killed):
            push_all(ops_engine, client, _read(), PushSettings(batch_size=10, concurrency=1),
                     on_batch=kill_after_three)
        assert 0 < _held(sandbox)["subscriptions"] < 40 or "invoices" not in _held(sandbox)
        rerun = push_all(ops_engine, client, _read(), PushSettings(batch_size=10))
    assert rerun["subscriptions"].unchanged >= 30
    assert _held(sandbox) == _expected() and stats(sandbox)["duplicates_seen"] == 0


def test_every_request_is_logged_with_request_id_batch_id_and_payload(ops_engine, sandbox):
    with make_client(sandbox) as client:
        push_entity(ops_engine, client, "invoices", chunks(DATA["invoices"]), PushSettings(batch_size=60))
    with ops_engine.connect() as c:
        rows = c.execute(sa.select(request_log)).mappings().all()
        assert len(rows) == 2 and all(r["request_id"].startswith("req_") for r in rows)
        assert all(r["status_code"] == 200 and r["records"] == 60 and r["batch_id"] for r in rows)
        assert all(load_payload(c, r["payload_ref"]) for r in rows)
        ledger = c.execute(sa.select(push_ledger.c.request_id).distinct()).scalars().all()
    assert set(ledger) == {r["request_id"] for r in rows}


def test_canonical_tables_stream_from_duckdb(ops_engine, sandbox, tmp_path):
    import duckdb
    import pyarrow as pa

    from recovery_pipeline.providers.push import iter_canonical_duckdb

    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("create schema canonical")
    for entity, rows in DATA.items():
        table = pa.Table.from_pylist([{k: v for k, v in r.items()
                                       if k not in ("invoice_created_at", "subscription_start")}
                                      for r in rows])
        con.register("t", table)
        con.execute(f"create table canonical.{entity} as select * from t")
        con.unregister("t")
    parts = list(iter_canonical_duckdb(con, "transactions", chunk_rows=50))
    assert len(parts) > 1 and all(len(p) <= 50 for p in parts)
    with make_client(sandbox) as client:
        result = push_all(ops_engine, client, lambda e: iter_canonical_duckdb(con, e, 64))
    con.close()
    assert _held(sandbox) == _expected() and result["transactions"].records_sent == len(
        DATA["transactions"])
