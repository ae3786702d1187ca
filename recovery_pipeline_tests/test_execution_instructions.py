"""Each provider event / polled action maps to the right normalized instruction."""

from __future__ import annotations

import json

import pytest

from recovery_pipeline.execution import instructions as ins
from recovery_pipeline.execution.instructions import (
    InstructionError,
    instruction_from_inbox,
    instruction_from_polled_action,
)
from recovery_pipeline_tests._execution_fakes import T0, slicker_event


def test_slicker_retry_suggestion_maps_to_retry_now_with_ideal_time():
    body = slicker_event("evt_1", "recovery_action", "in_1", "ACTION_SUGGESTION_RETRY", ideal=T0)
    inst = instruction_from_inbox("slicker", "evt_1", json.dumps(body), event_type="recovery_action")
    assert (inst.kind, inst.invoice_id, inst.ideal_retry_time) == (ins.RETRY_NOW, "in_1", T0)
    assert inst.idempotency_key == "slicker:evt_1"


def test_slicker_card_change_maps_to_payment_method_update():
    body = slicker_event("evt_2", "recovery_action", "in_1", "ACTION_SUGGESTION_CARD_CHANGE")
    assert instruction_from_inbox("slicker", "evt_2", body).kind == ins.REQUEST_PM_UPDATE


@pytest.mark.parametrize("suggestion", ["ACTION_SUGGESTION_UNSPECIFIED", "ACTION_SUGGESTION_CARD_CONFIRMATION",
                                        "SOMETHING_NEW"])
def test_slicker_unknown_or_unspecified_suggestion_is_skipped_not_crashing(suggestion):
    inst = instruction_from_inbox("slicker", "e", slicker_event("e", "recovery_action", "in_1", suggestion))
    assert inst.kind == ins.SKIP and inst.raw_type == suggestion


@pytest.mark.parametrize("etype", ["pause_collection", "pause_invoice"])
def test_slicker_pause_collection_and_pause_invoice_both_pause(etype):
    assert instruction_from_inbox("slicker", "e", slicker_event("e", etype, "in_1")).kind == ins.PAUSE_COLLECTION


def test_slicker_complete_dunning_maps_to_complete_dunning():
    inst = instruction_from_inbox("slicker", "e", slicker_event("e", "complete_dunning", "in_1"))
    assert inst.kind == ins.COMPLETE_DUNNING


def test_polled_action_maps_by_suggestion_and_keeps_action_id():
    inst = instruction_from_polled_action({"requestId": "req_9", "invoiceId": "in_9",
                                           "actionSuggestion": "ACTION_SUGGESTION_RETRY",
                                           "idealRetryTime": "2026-01-15T12:00:00Z"})
    assert (inst.source, inst.source_event_id, inst.kind, inst.ideal_retry_time) == ("poll", "req_9", ins.RETRY_NOW, T0)


def test_revtain_success_is_mark_paid_keyed_by_transaction_id():
    body = {"id": "ev1", "type": "recovery.success", "data": {"revtainTransactionId": "rt_1"}}
    inst = instruction_from_inbox("revtain", "ev1", body)
    assert (inst.kind, inst.transaction_id) == (ins.MARK_PAID, "rt_1")


@pytest.mark.parametrize(("etype", "recommended", "kind"), [
    ("recovery.failed", "wait", ins.NOOP),
    ("recovery.failed", "request_card_update", ins.REQUEST_PM_UPDATE),
    ("recovery.blocked", "review_account", ins.ROUTE_TO_REVIEW),
    ("recovery.blocked", "something_else", ins.SKIP),
])
def test_revtain_failed_and_blocked_branch_on_recommended_action(etype, recommended, kind):
    body = {"id": "ev", "type": etype, "data": {"revtainTransactionId": "rt", "recommendedAction": recommended}}
    assert instruction_from_inbox("revtain", "ev", body).kind == kind


def test_revtain_card_events_record_or_forward_the_link():
    updated = instruction_from_inbox("revtain", "a", {"event": "card.updated", "customerId": "cus_1"})
    expiring = instruction_from_inbox("revtain", "b", {"event": "card.expiring_soon", "invoiceId": "in_1",
                                                       "cardUpdateUrl": "https://pay.example/u/1"})
    assert updated.kind == ins.NOOP
    assert (expiring.kind, expiring.card_update_url) == (ins.FORWARD_CARD_UPDATE_LINK, "https://pay.example/u/1")


def test_revtain_unknown_event_type_is_skipped():
    assert instruction_from_inbox("revtain", "x", {"type": "recovery.something"}).kind == ins.SKIP


@pytest.mark.parametrize(("recovered", "kind"), [(True, ins.MARK_PAID), (False, ins.COMPLETE_DUNNING)])
def test_butter_end_of_dunning_marks_paid_or_completes_dunning(recovered, kind):
    body = {"timestamp": 1700000000, "invoice_id": "in_5", "recovered": recovered, "custom": {}}
    inst = instruction_from_inbox("butter", "dd_1", body, event_type="end_of_dunning")
    assert (inst.kind, inst.invoice_id) == (kind, "in_5")


def test_standard_webhook_types_are_configurable():
    body = {"type": "acme.retry_please", "data": {"invoice_id": "in_7"}}
    default = instruction_from_inbox("standard", "m1", body)
    mapped = instruction_from_inbox("standard", "m1", body, standard_type_map={"acme.retry_please": "retry_now"})
    assert (default.kind, mapped.kind, mapped.invoice_id) == (ins.SKIP, ins.RETRY_NOW, "in_7")


def test_stripe_events_are_not_instructions():
    assert instruction_from_inbox("stripe", "evt", "{not even parsed").kind == ins.SKIP


def test_unreadable_payload_raises_a_clear_error():
    with pytest.raises(InstructionError, match="not JSON"):
        instruction_from_inbox("slicker", "e", "{broken")


def test_retry_is_due_only_at_or_after_ideal_time():
    body = slicker_event("e", "recovery_action", "in_1", "ACTION_SUGGESTION_RETRY", ideal=T0)
    inst = instruction_from_inbox("slicker", "e", body)
    assert not inst.is_due(T0.replace(hour=11)) and inst.is_due(T0)


@pytest.mark.parametrize(("atype", "kind"), [("pause_collection", ins.PAUSE_COLLECTION),
                                             ("complete_dunning", ins.COMPLETE_DUNNING)])
def test_polled_action_with_a_state_type_maps_to_that_state_action(atype, kind):
    inst = instruction_from_polled_action({"requestId": "r", "invoiceId": "in_1", "type": atype,
                                           "actionSuggestion": "ACTION_SUGGESTION_UNSPECIFIED"})
    assert inst.kind == kind


def test_slicker_webhook_carrying_the_action_id_shares_its_identity_with_the_polled_action():
    body = slicker_event("evt_9", "recovery_action", "in_1", "ACTION_SUGGESTION_RETRY")
    body["data"]["requestId"] = "ra_9"
    hooked = instruction_from_inbox("slicker", "evt_9", body)
    polled = instruction_from_polled_action({"requestId": "ra_9", "invoiceId": "in_1",
                                             "actionSuggestion": "ACTION_SUGGESTION_RETRY"})
    assert hooked.source_event_id == polled.source_event_id == "ra_9"
    assert hooked.delivery_id == "evt_9"
