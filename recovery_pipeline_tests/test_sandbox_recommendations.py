"""Recommendations are deterministic from decline codes and history."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from recovery_pipeline.provider_sandbox.recommend import recommend
from recovery_pipeline.providers import get_adapter
from recovery_pipeline.providers.base import wire
from recovery_pipeline.providers.synthetic import generate
from recovery_pipeline_tests.provider_fixtures import API_KEY, start_sandbox

T = datetime(2026, 2, 20, 13, 0, tzinfo=UTC)


def test_insufficient_funds_waits_for_a_payday():
    rec = recommend("insufficient_funds", 1, T)
    assert rec.kind == "retry" and rec.ideal_retry_time == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_soft_declines_retry_the_next_day():
    rec = recommend("do_not_honor", 1, T)
    assert rec.action_suggestion == "ACTION_SUGGESTION_RETRY"
    assert rec.ideal_retry_time == datetime(2026, 2, 21, 13, 0, tzinfo=UTC)


def test_customer_fixable_declines_ask_for_a_card_change():
    for code in ("expired_card", "incorrect_cvc", "card_declined"):
        assert recommend(code, 1, T).action_suggestion == "ACTION_SUGGESTION_CARD_CHANGE"


def test_hard_declines_and_long_histories_end_dunning_or_pause():
    assert recommend("fraudulent", 1, T).slicker_type == "complete_dunning"
    assert recommend("do_not_honor", 3, T).slicker_type == "pause_collection"
    assert recommend("do_not_honor", 5, T).slicker_type == "complete_dunning"


def _actions_after_pushing(data) -> list[dict]:
    h = {"Authorization": f"Bearer {API_KEY}"}
    adapter = get_adapter("slicker")
    with start_sandbox(deliver_in_background=False) as url:
        for entity in ("subscriptions", "invoices", "transactions"):
            items = [wire(entity, adapter, r) for r in data[entity]]
            for i in range(0, len(items), 100):
                httpx.post(f"{url}/v1/{entity}", json=items[i:i + 100], headers=h).raise_for_status()
        return httpx.get(f"{url}/v1/recovery_actions", params={"pageSize": 100}, headers=h).json()[
            "recoveryActions"]


def test_the_same_history_gives_the_same_recommendations():
    data = generate(60, seed=21, failure_rate=0.8)
    first, second = _actions_after_pushing(data), _actions_after_pushing(data)
    assert first and first == second
    open_invoices = {i["invoice_id"] for i in data["invoices"] if i["status"] == "open"}
    assert {a["invoiceId"] for a in first} <= open_invoices  # settled invoices get no advice
