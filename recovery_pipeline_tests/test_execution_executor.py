"""The executor: modes, audit trail, duplicates, waiting retries, failures, review, ordering."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa

from recovery_pipeline.execution.executor import execute_pending, redrive_event_dead_letters
from recovery_pipeline.execution.killswitch import set_kill_switch
from recovery_pipeline.execution.policy import policy_from_config
from recovery_pipeline.opsstore.models import (
    dead_letters,
    executed_actions,
    handoffs,
    manual_review,
    recovery_actions,
    webhook_inbox,
)
from recovery_pipeline.opsstore.store import utcnow
from recovery_pipeline_tests._execution_fakes import (
    FakeBilling,
    add_inbox,
    add_polled,
    future,
    invoice,
    ops_engine,
    past,
    slicker_event,
)

LIVE = policy_from_config({"mode": "live", "retry_backoff_seconds": 0}, env={})
SHADOW = policy_from_config({"mode": "shadow"}, env={})


def _rows(engine, table, *where):
    with engine.connect() as c:
        return [r._asdict() for r in c.execute(sa.select(table).where(*where))]


def _retry_event(engine, event_id, invoice_id, ideal=None, **kw):
    add_inbox(engine, "slicker", event_id,
              slicker_event(event_id, "recovery_action", invoice_id, "ACTION_SUGGESTION_RETRY",
                            ideal=ideal or past()), **kw)


def test_live_mode_executes_and_records_before_and_after(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")})
    _retry_event(engine, "evt_1", "in_1")
    report = execute_pending(engine, billing, LIVE, env={})
    [row] = _rows(engine, executed_actions)
    assert billing.calls == [("retry", "in_1", "slicker:evt_1")]
    assert (row["mode"], row["result"], row["business_action"]) == ("live", "executed", "retry_now")
    assert json.loads(row["before_state"])["status"] == "open"
    assert json.loads(row["after_state"])["status"] == "paid"
    assert report.results["executed"] == 1
    assert _rows(engine, webhook_inbox)[0]["status"] == "processed"


def test_shadow_mode_records_what_would_happen_and_changes_nothing(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")})
    _retry_event(engine, "evt_1", "in_1")
    add_inbox(engine, "slicker", "evt_2", slicker_event("evt_2", "pause_collection", "in_1"))
    execute_pending(engine, billing, SHADOW, env={})
    rows = _rows(engine, executed_actions)
    assert billing.calls == [] and billing.invoices["in_1"]["status"] == "open"
    assert {(r["mode"], r["result"]) for r in rows} == {("shadow", "shadowed")}
    assert all(r["before_state"] == r["after_state"] for r in rows)


def test_cohort_by_country_executes_inside_and_shadows_outside(tmp_path):
    engine = ops_engine(tmp_path)
    billing = FakeBilling({"in_de": invoice("in_de", country="DE", customer_id="c_de"),
                           "in_us": invoice("in_us", country="US", customer_id="c_us")})
    _retry_event(engine, "e_de", "in_de")
    _retry_event(engine, "e_us", "in_us")
    policy = policy_from_config({"mode": "cohort", "cohort": {"countries": ["de"]}}, env={})
    execute_pending(engine, billing, policy, env={})
    modes = {r["invoice_id"]: (r["mode"], r["result"]) for r in _rows(engine, executed_actions)}
    assert modes == {"in_de": ("live", "executed"), "in_us": ("shadow", "shadowed")}
    assert [c[1] for c in billing.calls] == ["in_de"]


def test_execution_mode_env_override_wins_over_config(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")})
    _retry_event(engine, "evt_1", "in_1")
    policy = policy_from_config({"mode": "live"}, env={"RECOVERY_EXECUTION_MODE": "shadow"})
    execute_pending(engine, billing, policy, env={})
    assert billing.calls == [] and _rows(engine, executed_actions)[0]["mode"] == "shadow"


def test_kill_switch_row_pauses_execution_and_leaves_events_pending(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")})
    _retry_event(engine, "evt_1", "in_1")
    set_kill_switch(engine, True, by="test")
    report = execute_pending(engine, billing, LIVE, env={})
    assert report.paused and billing.calls == [] and _rows(engine, executed_actions) == []
    assert _rows(engine, webhook_inbox)[0]["status"] == "pending"
    set_kill_switch(engine, False, by="test")
    execute_pending(engine, billing, LIVE, env={})
    assert len(billing.calls) == 1


def test_kill_switch_env_pauses_execution(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")})
    _retry_event(engine, "evt_1", "in_1")
    assert execute_pending(engine, billing, LIVE, env={"RECOVERY_KILL_SWITCH": "1"}).paused
    assert billing.calls == []


def test_redelivered_event_is_marked_duplicate_without_a_second_action(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1", decline_code=None)})
    add_inbox(engine, "slicker", "evt_1", slicker_event("evt_1", "pause_collection", "in_1"))
    execute_pending(engine, billing, LIVE, env={})
    with engine.begin() as c:  # a replay puts the stored event back to pending
        c.execute(webhook_inbox.update().values(status="pending"))
    report = execute_pending(engine, billing, LIVE, env={})
    [inbox_row] = _rows(engine, webhook_inbox)
    assert report.duplicates == 1 and len(billing.calls) == 1
    assert inbox_row["status"] == "processed" and inbox_row["last_error"].startswith("duplicate:")
    assert len(_rows(engine, executed_actions)) == 1


def test_retry_waits_until_ideal_time(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")})
    ideal = future(30)
    _retry_event(engine, "evt_1", "in_1", ideal=ideal)
    report = execute_pending(engine, billing, LIVE, env={})
    assert report.waiting == 1 and billing.calls == []
    assert _rows(engine, webhook_inbox)[0]["status"] == "pending"
    execute_pending(engine, billing, LIVE, now=ideal, env={})
    assert billing.calls == [("retry", "in_1", "slicker:evt_1")]


def test_failures_retry_then_dead_letter_after_max_receive_count(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")}, fail_times=99)
    _retry_event(engine, "evt_1", "in_1")
    policy = policy_from_config({"mode": "live", "max_receive_count": 3, "retry_backoff_seconds": 0}, env={})
    for _ in range(2):
        execute_pending(engine, billing, policy, env={})
    [row] = _rows(engine, webhook_inbox)
    assert (row["status"], row["attempts"]) == ("failed", 2) and _rows(engine, dead_letters) == []
    execute_pending(engine, billing, policy, env={})
    [dl] = _rows(engine, dead_letters)
    assert (dl["kind"], dl["ref"], dl["attempts"]) == ("event", "evt_1", 3)
    assert _rows(engine, webhook_inbox)[0]["status"] == "dead"
    assert execute_pending(engine, billing, policy, env={}).considered == 0


def test_failure_then_success_executes_once_with_the_same_idempotency_key(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")}, fail_times=1)
    _retry_event(engine, "evt_1", "in_1")
    execute_pending(engine, billing, LIVE, env={})
    execute_pending(engine, billing, LIVE, env={})
    [row] = _rows(engine, executed_actions)
    assert billing.calls == [("retry", "in_1", "slicker:evt_1")]
    assert (row["result"], row["attempts"]) == ("executed", 2)


def test_redrive_puts_dead_events_back_and_they_execute_once(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")}, fail_times=1)
    _retry_event(engine, "evt_1", "in_1")
    policy = policy_from_config({"mode": "live", "max_receive_count": 1, "retry_backoff_seconds": 0}, env={})
    execute_pending(engine, billing, policy, env={})
    assert redrive_event_dead_letters(engine) == 1 and redrive_event_dead_letters(engine) == 0
    execute_pending(engine, billing, policy, env={})
    assert len(billing.calls) == 1 and _rows(engine, executed_actions)[0]["result"] == "executed"


def test_unknown_invoice_goes_to_manual_review(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({})
    _retry_event(engine, "evt_1", "in_missing")
    execute_pending(engine, billing, LIVE, env={})
    [review] = _rows(engine, manual_review)
    assert "unknown invoice" in review["reason"] and billing.calls == []
    assert _rows(engine, executed_actions)[0]["result"] == "review"


def test_already_paid_invoice_goes_to_review_but_mark_paid_is_a_noop(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1", status="paid")})
    _retry_event(engine, "evt_1", "in_1")
    add_inbox(engine, "butter", "dd_1", {"timestamp": 1, "invoice_id": "in_1", "recovered": True, "custom": {}},
              event_type="end_of_dunning")
    execute_pending(engine, billing, LIVE, env={})
    results = {r["source_event_id"]: r["result"] for r in _rows(engine, executed_actions)}
    assert results == {"evt_1": "review", "dd_1": "noop"} and billing.calls == []
    assert [r["source_event_id"] for r in _rows(engine, manual_review)] == ["evt_1"]


def test_hard_decline_asked_to_retry_goes_to_review(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1", decline_code="stolen_card")})
    _retry_event(engine, "evt_1", "in_1")
    execute_pending(engine, billing, LIVE, env={})
    assert billing.calls == [] and "hard decline" in _rows(engine, manual_review)[0]["reason"]


def test_repeated_idempotency_collisions_go_to_review(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")}, conflict=True)
    _retry_event(engine, "evt_1", "in_1")
    policy = policy_from_config({"mode": "live", "max_idempotency_collisions": 2,
                                 "retry_backoff_seconds": 0}, env={})
    execute_pending(engine, billing, policy, env={})
    assert _rows(engine, manual_review) == []
    execute_pending(engine, billing, policy, env={})
    assert "idempotency collisions" in _rows(engine, manual_review)[0]["reason"]


def test_unknown_suggestion_is_stored_and_skipped(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")})
    add_inbox(engine, "slicker", "evt_1",
              slicker_event("evt_1", "recovery_action", "in_1", "ACTION_SUGGESTION_CARD_CONFIRMATION"))
    execute_pending(engine, billing, LIVE, env={})
    [row] = _rows(engine, webhook_inbox)
    assert row["status"] == "skipped" and json.loads(row["body"])["id"] == "evt_1"
    assert _rows(engine, executed_actions)[0]["result"] == "skipped" and billing.calls == []


def test_unreadable_payload_is_dead_lettered_with_its_body_kept(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({})
    add_inbox(engine, "slicker", "evt_bad", "{broken", event_type="recovery_action")
    execute_pending(engine, billing, LIVE, env={})
    [dl] = _rows(engine, dead_letters)
    assert "not JSON" in dl["last_error"] and dl["payload_ref"]


def test_stripe_inbox_rows_are_left_to_the_stripe_connector(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({})
    add_inbox(engine, "stripe", "evt_s", {"id": "evt_s", "type": "invoice.paid"})
    execute_pending(engine, billing, LIVE, env={})
    assert _rows(engine, webhook_inbox)[0]["status"] == "pending" and _rows(engine, executed_actions) == []


def test_backlog_runs_financial_events_before_state_updates_oldest_first(tmp_path):
    engine = ops_engine(tmp_path)
    billing = FakeBilling({f"in_{i}": invoice(f"in_{i}", decline_code=None) for i in range(4)},
                          retry_outcome="failed")
    add_inbox(engine, "slicker", "pause_old", slicker_event("pause_old", "pause_collection", "in_0"),
              received_at=past(50))
    _retry_event(engine, "retry_new", "in_1", received_at=past(10))
    add_inbox(engine, "slicker", "dunning_mid", slicker_event("dunning_mid", "complete_dunning", "in_2"),
              received_at=past(30))
    add_polled(engine, "poll_retry_old", "in_3", "ACTION_SUGGESTION_RETRY", ideal=past(60), polled_at=past(40))
    report = execute_pending(engine, billing, LIVE, env={})
    assert report.order == ["poll_retry_old", "retry_new", "pause_old", "dunning_mid"]
    assert _rows(engine, recovery_actions)[0]["status"] == "processed"


def test_revtain_success_is_matched_to_the_invoice_through_the_handoff(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_9": invoice("in_9")})
    now = utcnow()
    with engine.begin() as c:
        c.execute(handoffs.insert().values(provider="revtain", idempotency_key="in_9", invoice_id="in_9",
                                           status="accepted", provider_transaction_id="rt_77",
                                           created_at=now, updated_at=now))
    add_inbox(engine, "revtain", "ev_1", {"id": "ev_1", "type": "recovery.success",
                                          "data": {"revtainTransactionId": "rt_77"}})
    execute_pending(engine, billing, LIVE, env={})
    assert billing.calls == [("mark_paid", "in_9", "revtain:ev_1")]
    assert _rows(engine, executed_actions)[0]["invoice_id"] == "in_9"


def test_a_failed_event_waits_for_its_backoff_before_the_next_attempt(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")}, fail_times=1)
    _retry_event(engine, "evt_1", "in_1")
    policy = policy_from_config({"mode": "live", "retry_backoff_seconds": 60}, env={})
    t0 = utcnow()
    execute_pending(engine, billing, policy, now=t0, env={})
    early = execute_pending(engine, billing, policy, now=t0 + timedelta(seconds=30), env={})
    assert early.waiting == 1 and billing.calls == []
    execute_pending(engine, billing, policy, now=t0 + timedelta(seconds=61), env={})
    assert billing.calls == [("retry", "in_1", "slicker:evt_1")]


def test_forward_card_update_link_from_card_expiring_soon_executes_live(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")})
    add_inbox(engine, "revtain", "ev_c", {"id": "ev_c", "type": "card.expiring_soon",
                                          "data": {"invoiceId": "in_1", "cardUpdateUrl": "https://pay.example/u"}})
    execute_pending(engine, billing, LIVE, env={})
    assert billing.calls == [("forward_card_update_link", "in_1", "revtain:ev_c")]
    assert billing.invoices["in_1"]["card_update_url"] == "https://pay.example/u"


def test_kill_switch_flipped_mid_run_stops_and_leaves_the_rest_pending(tmp_path, monkeypatch):
    from recovery_pipeline.execution import executor

    monkeypatch.setattr(executor, "KILL_SWITCH_RECHECK_SECONDS", 0.0)
    engine = ops_engine(tmp_path)
    billing = FakeBilling({f"in_{i}": invoice(f"in_{i}", decline_code=None) for i in range(5)})
    original = billing.pause_collection

    def pause_then_flip(invoice_id, *, idempotency_key):
        set_kill_switch(engine, True, by="oncall")
        return original(invoice_id, idempotency_key=idempotency_key)

    billing.pause_collection = pause_then_flip
    for i in range(5):
        add_inbox(engine, "slicker", f"e{i}", slicker_event(f"e{i}", "pause_collection", f"in_{i}"))
    report = execute_pending(engine, billing, LIVE, env={})
    statuses = sorted(r["status"] for r in _rows(engine, webhook_inbox))
    assert report.paused and len(billing.calls) == 1
    assert statuses == ["pending"] * 4 + ["processed"]
    assert [r["result"] for r in _rows(engine, executed_actions)] == ["executed"]


def test_crash_after_acting_before_recording_does_not_act_twice(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")})
    _retry_event(engine, "evt_1", "in_1")
    execute_pending(engine, billing, LIVE, env={})
    with engine.begin() as c:  # as if the process died after the billing call, before the result commit
        c.execute(executed_actions.update().values(result="running"))
        c.execute(webhook_inbox.update().values(status="pending"))
    fresh = execute_pending(engine, billing, LIVE, env={})
    assert fresh.busy == 1 and len(billing.calls) == 1  # a young claim may belong to a live run
    with engine.begin() as c:  # the lease runs out: the run that held it is gone
        c.execute(executed_actions.update().values(executed_at=utcnow() - timedelta(hours=1)))
    execute_pending(engine, billing, LIVE, env={})
    [row] = _rows(engine, executed_actions)
    assert len(billing.calls) == 1 and (row["result"], row["attempts"]) == ("executed", 2)


def test_a_thousand_events_give_a_thousand_actions_once(tmp_path):
    engine = ops_engine(tmp_path)
    n = 1000
    billing = FakeBilling({f"in_{i}": invoice(f"in_{i}", decline_code=None) for i in range(n)})
    with engine.begin() as c:
        c.execute(webhook_inbox.insert(), [
            dict(provider="slicker", event_id=f"e{i}", event_type="pause_collection", received_at=utcnow(),
                 headers_json="{}", body=json.dumps(slicker_event(f"e{i}", "pause_collection", f"in_{i}")),
                 status="pending", attempts=0) for i in range(n)])
    policy = policy_from_config({"mode": "live", "batch_size": 5000}, env={})
    execute_pending(engine, billing, policy, env={})
    execute_pending(engine, billing, policy, env={})
    assert len(billing.calls) == n == len({c[1] for c in billing.calls})
    assert len(_rows(engine, executed_actions, executed_actions.c.result == "executed")) == n


def test_two_concurrent_runs_act_once_per_event(tmp_path):
    import threading

    engine = ops_engine(tmp_path)
    n = 200
    billing = FakeBilling({f"in_{i}": invoice(f"in_{i}", decline_code=None) for i in range(n)})
    invoked = []  # every call that reaches the billing system, before its idempotency check
    original = billing.pause_collection
    billing.pause_collection = lambda iid, *, idempotency_key: (invoked.append(iid),
                                                                 original(iid, idempotency_key=idempotency_key))[1]
    for i in range(n):
        add_inbox(engine, "slicker", f"e{i}", slicker_event(f"e{i}", "pause_collection", f"in_{i}"))
    threads = [threading.Thread(target=execute_pending, args=(engine, billing, LIVE), kwargs={"env": {}})
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    execute_pending(engine, billing, LIVE, env={})
    assert sorted(invoked) == sorted(f"in_{i}" for i in range(n))
    assert {r["status"] for r in _rows(engine, webhook_inbox)} == {"processed"}


def test_card_update_url_from_a_handoff_is_forwarded_once(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_5": invoice("in_5", decline_code="expired_card")})
    now = utcnow()
    with engine.begin() as c:
        c.execute(handoffs.insert().values(provider="revtain", idempotency_key="in_5", invoice_id="in_5",
                                           status="accepted", provider_transaction_id="rvt_5",
                                           card_update_url="https://pay.revtain.example/update/rvt_5",
                                           created_at=now, updated_at=now))
    execute_pending(engine, billing, LIVE, env={})
    execute_pending(engine, billing, LIVE, env={})
    [row] = _rows(engine, executed_actions)
    assert billing.calls == [("forward_card_update_link", "in_5", "revtain:handoff:in_5")]
    assert (row["source"], row["result"]) == ("handoff", "executed")


def test_a_re_attempt_after_someone_else_paid_the_invoice_goes_to_review(tmp_path):
    engine, billing = ops_engine(tmp_path), FakeBilling({"in_1": invoice("in_1")}, fail_times=1)
    _retry_event(engine, "evt_1", "in_1")
    execute_pending(engine, billing, LIVE, env={})
    billing.invoices["in_1"]["status"] = "paid"  # the customer paid by other means meanwhile
    execute_pending(engine, billing, LIVE, env={})
    assert billing.calls == [] and "state changed" in _rows(engine, manual_review)[0]["reason"]
