"""invoice_outcomes tells every ending apart, from the attempts (across months)."""

from __future__ import annotations

from recovery_pipeline_tests.ingest_fixtures import World, load_and_model, query, ts

M, N = "2025-03", "2025-04"


def test_each_outcome_is_distinguishable(data_env):
    w = World()
    c = w.customer(M)
    s = w.subscription(M, c)
    first = w.invoice(M, s)
    w.transaction(M, first)
    recovered = w.invoice(M, s, paid_at=ts(N, 2))
    w.transaction(M, recovered, "failed", 1, day=28)
    w.transaction(N, recovered, "succeeded", 2, day=2)  # the retry lands next month
    lost = w.invoice(M, s, status="uncollectible", paid_at=None, dunning_complete_at=ts(N, 20))
    w.transaction(M, lost, "failed", 1)
    refunded = w.invoice(M, s, status="refunded")
    w.transaction(M, refunded)
    w.transaction(M, refunded, "refunded", 2, day=9)
    voided = w.invoice(M, s, status="void", paid_at=None)
    still_open = w.invoice(M, s, status="open", paid_at=None)
    w.transaction(M, still_open, "failed", 1)
    w.write_exports(data_env.exports_dir)
    load_and_model(data_env, [M, N])
    load_and_model(data_env, [M])  # outcomes of M once N's attempts are in
    got = dict(query(data_env, "select invoice_id, outcome from canonical.invoice_outcomes"))
    assert got == {
        first["invoice_id"]: "first_attempt_success",
        recovered["invoice_id"]: "paid_after_failure",
        lost["invoice_id"]: "unrecovered",
        refunded["invoice_id"]: "refunded",
        voided["invoice_id"]: "voided",
        still_open["invoice_id"]: "open",
    }
    rec = query(data_env, "select attempts, failed_attempts, recovered_amount_minor "
                          "from canonical.invoice_outcomes where invoice_id = $i",
                {"i": recovered["invoice_id"]})
    assert rec == [(2, 1, recovered["amount_minor"])]


def test_customer_country_comes_from_the_customer(data_env):
    w = World()
    c = w.customer(M, country="ie")
    s = w.subscription(M, c, currency="EUR")
    inv = w.invoice(M, s)
    w.transaction(M, inv)
    w.write_exports(data_env.exports_dir)
    load_and_model(data_env, [M])
    assert query(data_env, "select currency, customer_country, month from canonical.invoices") == [
        ("EUR", "IE", M)]
