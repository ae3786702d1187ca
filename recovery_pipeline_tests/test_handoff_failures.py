"""Failure hand-off: executed once per invoice (even across crashes and re-runs), 403/409 are
outcomes, and the billing system is told so its own retries stop."""

from __future__ import annotations

import json

import httpx
import sqlalchemy as sa

from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.opsstore.models import dead_letters, handoffs
from recovery_pipeline.opsstore.store import utcnow
from recovery_pipeline.providers.handoff import billing_marker, handoff_failures
from recovery_pipeline.providers.push import redrive
from recovery_pipeline.providers.synthetic import generate
from recovery_pipeline_tests.provider_fixtures import (  # noqa: F401
    Recorder,
    faults,
    make_client,
    ops_engine,
    sandbox,
    stats,
)

DATA = generate(30, seed=4, failure_rate=1.0)
FAILED = [dict(t, decline_code="do_not_honor") for t in DATA["transactions"] if t["status"] == "failed"]
INVOICES = sorted({t["invoice_id"] for t in FAILED})


def _statuses(engine) -> dict[str, str]:
    with engine.connect() as c:
        return dict(c.execute(sa.select(handoffs.c.invoice_id, handoffs.c.status)).all())


def test_revtain_hand_off_is_executed_once_per_invoice_across_reruns(ops_engine, sandbox):
    billing = Recorder()
    with serve_in_thread(billing.app()) as billing_url, make_client(sandbox, "revtain") as client:
        mark = billing_marker(billing_url, "billing-key")
        first = handoff_failures(ops_engine, client, FAILED, mark_handed_off=mark)
        second = handoff_failures(ops_engine, client, FAILED, mark_handed_off=mark)
    s = stats(sandbox)["revtain"]
    assert first.considered == len(INVOICES) and second.sent == 0
    assert second.already_done == len(INVOICES)
    assert s["charges"] == len(INVOICES) - first.outcomes.get("duplicate", 0) and s["duplicates"] == first.outcomes.get("duplicate", 0)
    marked = [c["path"] for c in billing.calls]
    assert sorted(marked) == sorted(f"/invoices/{i}/hand-off" for i, st in _statuses(ops_engine).items()
                                    if st in ("accepted", "queued", "duplicate"))
    assert all(c["headers"]["idempotency-key"] == f"hand-off:{c['path'].split('/')[2]}"
               for c in billing.calls)


def test_a_crash_after_send_is_recorded_as_duplicate_on_rerun(ops_engine, sandbox):
    txn = FAILED[0]
    with make_client(sandbox, "revtain") as client:
        handoff_failures(ops_engine, client, [txn])
        with ops_engine.begin() as c:  # as if the process died before recording the outcome
            c.execute(handoffs.update().values(status="pending", provider_transaction_id=None))
        again = handoff_failures(ops_engine, client, [txn])
    assert again.outcomes == {"duplicate": 1}
    assert stats(sandbox)["revtain"]["charges"] == 1
    with ops_engine.connect() as c:
        row = c.execute(sa.select(handoffs)).mappings().one()
    assert row["provider_transaction_id"].startswith("rvt_")


def test_blocked_declines_are_an_outcome_not_an_error(ops_engine, sandbox):
    txn = dict(FAILED[0], decline_code="fraudulent")
    billing = Recorder()
    with serve_in_thread(billing.app()) as billing_url, make_client(sandbox, "revtain") as client:
        result = handoff_failures(ops_engine, client, [txn],
                                  mark_handed_off=billing_marker(billing_url, "k"))
    assert result.outcomes == {"blocked": 1} and result.dead_letters == 0
    assert _statuses(ops_engine) == {txn["invoice_id"]: "blocked"}
    assert billing.calls == []  # the provider did not take it: the merchant's retries go on
    with ops_engine.connect() as c:
        body = json.loads(c.execute(sa.select(handoffs.c.response_json)).scalar_one())
    assert body["http_status"] == 403


def test_a_hand_off_that_keeps_failing_is_dead_lettered_and_redriven_once(ops_engine, sandbox):
    txn = FAILED[1]
    with make_client(sandbox, "revtain") as client:
        faults(sandbox, fraction_5xx=1.0, seed=3)
        failed = handoff_failures(ops_engine, client, [txn])
        faults(sandbox)

        def rehandoff(body: dict) -> bool:
            from recovery_pipeline.providers.handoff import execute_one

            return execute_one(ops_engine, client, txn) in ("accepted", "queued", "duplicate",
                                                            "blocked")

        first = redrive(ops_engine, client, handoff=rehandoff)
        second = redrive(ops_engine, client, handoff=rehandoff)
    assert failed.outcomes == {"failed": 1} and failed.dead_letters == 1
    assert first.redriven == 1 and second.considered == 0
    assert stats(sandbox)["revtain"]["charges"] == 1
    with ops_engine.connect() as c:
        assert c.execute(sa.select(dead_letters.c.status)).scalar_one() == "redriven"


def test_slicker_hand_off_pushes_the_failures_and_marks_the_invoices(ops_engine, sandbox):
    billing = Recorder()
    with serve_in_thread(billing.app()) as billing_url, make_client(sandbox, "slicker") as client:
        mark = billing_marker(billing_url, "k")
        first = handoff_failures(ops_engine, client, FAILED, mark_handed_off=mark)
        second = handoff_failures(ops_engine, client, FAILED, mark_handed_off=mark)
    assert first.sent == len(FAILED) and second.sent == 0
    assert first.outcomes == {"accepted": len(INVOICES)} and second.already_done == len(INVOICES)
    assert len(billing.calls) == len(INVOICES)
    held = httpx.get(f"{sandbox}/sandbox/counts").json()["totals"]["failed_transactions"]
    assert held == len(FAILED)


def test_pending_rows_are_created_before_sending(ops_engine, sandbox):
    """The unique pending row is what stops a concurrent twin from sending the same key."""
    txn = FAILED[2]
    now = utcnow()
    with ops_engine.begin() as c:
        c.execute(handoffs.insert().values(provider="revtain", idempotency_key=txn["invoice_id"],
                                           invoice_id=txn["invoice_id"], status="accepted",
                                           created_at=now, updated_at=now))
    with make_client(sandbox, "revtain") as client:
        result = handoff_failures(ops_engine, client, [txn])
    assert result.sent == 0 and stats(sandbox)["revtain"]["executions"] == 0


def test_same_card_and_amount_409_for_another_invoice_does_not_stop_billing_retries(ops_engine, sandbox):
    a, b = FAILED[0], dict(FAILED[0], invoice_id="in_other", transaction_id="tx_other")
    billing = Recorder()
    with serve_in_thread(billing.app()) as billing_url, make_client(sandbox, "revtain") as client:
        result = handoff_failures(ops_engine, client, [a, b],
                                  mark_handed_off=billing_marker(billing_url, "k"))
    assert sorted(result.outcomes.items()) == [("accepted", 1), ("duplicate", 1)] or result.outcomes == {
        "queued": 1, "duplicate": 1}
    assert [c["path"] for c in billing.calls] == [f"/invoices/{a['invoice_id']}/hand-off"]
    assert stats(sandbox)["revtain"]["charges"] == 1
