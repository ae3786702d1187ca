"""The deterministic gateway simulation."""

from __future__ import annotations

from recovery_pipeline.billing_engine.gateway import (
    CUSTOMER_ACTION_DECLINES,
    DECLINE_CODES,
    HARD_DECLINES,
    Gateway,
)


def _charges(gw: Gateway, **kw):
    return [gw.charge(invoice_id=f"in_{i}", **kw) for i in range(400)]


def test_same_seed_and_inputs_give_the_same_charge_outcome():
    a = _charges(Gateway(seed=1), attempt_number=1)
    b = _charges(Gateway(seed=1), attempt_number=1)
    c = _charges(Gateway(seed=2), attempt_number=1)
    assert a == b
    assert [r.succeeded for r in a] != [r.succeeded for r in c]


def test_first_attempts_mostly_succeed_and_failures_carry_stripe_decline_codes():
    results = _charges(Gateway(seed=3), attempt_number=1)
    failed = [r for r in results if not r.succeeded]
    assert 0 < len(failed) < len(results) / 2
    assert all(r.decline_code in DECLINE_CODES and r.decline_message for r in failed)
    assert all(r.decline_code is None and r.gateway_transaction_id.startswith("ch_")
               for r in results if r.succeeded)


def test_hard_declines_never_succeed_on_retry_even_after_a_payment_method_update():
    gw = Gateway(seed=4)
    for code in HARD_DECLINES:
        for attempt in range(2, 8):
            for updated in (False, True):
                results = _charges(gw, attempt_number=attempt, previous_decline_code=code,
                                   payment_method_updated=updated)
                assert not any(r.succeeded for r in results), code
                assert {r.decline_code for r in results} == {code}


def test_soft_declines_recover_on_retry_with_some_probability():
    results = _charges(Gateway(seed=5), attempt_number=2, previous_decline_code="insufficient_funds")
    recovered = sum(r.succeeded for r in results)
    assert 0 < recovered < len(results)


def test_customer_action_declines_recover_only_after_a_payment_method_update():
    gw = Gateway(seed=6)
    for code in CUSTOMER_ACTION_DECLINES:
        before = _charges(gw, attempt_number=2, previous_decline_code=code)
        after = _charges(gw, attempt_number=2, previous_decline_code=code, payment_method_updated=True)
        assert not any(r.succeeded for r in before), code
        assert sum(r.succeeded for r in after) > len(after) / 2, code
