"""Monthly parity SQL + expectation suites on billing vs provider frames built in a tmp DuckDB."""

from __future__ import annotations

import duckdb
import pytest

from recovery_pipeline.reconciliation import checking, parity, provider_view, sqlrun, synthetic
from recovery_pipeline.reconciliation.config import ReconciliationSettings
from recovery_pipeline_tests._recon_helpers import rename_key, shift_provider_rows


@pytest.fixture(scope="module")
def billing(tmp_path_factory):
    path = tmp_path_factory.mktemp("wh") / "billing.duckdb"
    con = duckdb.connect(str(path))
    synthetic.generate(con, 600, months=4)
    rows = synthetic.provider_rows_from_billing(con)
    con.close()
    return path, rows


def _outcomes(path, rows, settings=None):
    con = duckdb.connect(str(path))
    try:
        provider_view.write_provider_counts(con, rows)
        sqlrun.materialize(con, "reconciliation", "monthly_parity")
        frame = parity.read_parity(con)
    finally:
        con.close()
    return {o.name: o for o in checking.parity_outcomes(frame, settings)}


def test_parity_passes_when_the_provider_holds_everything(billing):
    path, rows = billing
    out = _outcomes(path, rows)
    assert all(o.passed for o in out.values()), {n: o.summary for n, o in out.items() if not o.passed}


def test_parity_has_a_total_row_per_measure(billing):
    path, rows = billing
    con = duckdb.connect(str(path))
    provider_view.write_provider_counts(con, rows)
    sqlrun.materialize(con, "reconciliation", "monthly_parity")
    total = con.execute("select billing_value, provider_value from reconciliation.monthly_parity "
                        "where month = 'total' and measure = 'invoices' and dimension = 'total'").fetchone()
    con.close()
    assert total == (600, 600)


def test_one_invoice_missing_at_provider_fails_the_count_check_for_that_month_only(billing):
    path, rows = billing
    month = sorted({r["month"] for r in rows})[2]
    with duckdb.connect(str(path)) as con:
        inv = con.execute(
            "select i.currency, i.customer_country, o.outcome from canonical.invoices i join "
            "canonical.invoice_outcomes o using (invoice_id) where i.month = ? limit 1", [month]).fetchone()
    missing = shift_provider_rows(rows, month, {
        ("invoices", "total", ""): -1, ("invoices", "currency", inv[0]): -1,
        ("invoices", "country", inv[1]): -1, ("invoice_outcomes", "outcome", inv[2]): -1})
    out = _outcomes(path, missing)
    check = out["invoice_counts_match_provider"]
    assert not check.passed
    assert check.months == [month]
    assert month in check.summary and "+1" in check.summary
    assert out["transaction_counts_match_provider"].passed


def test_currency_mapped_wrongly_at_provider_fails_currency_parity(billing):
    path, rows = billing
    out = _outcomes(path, rename_key(rows, "currency", "EUR", "EURO"))
    check = out["currencies_match_provider"]
    assert not check.passed
    assert {d["key"] for d in check.differences} == {"EUR", "EURO"}
    assert out["invoice_counts_match_provider"].passed


def test_currency_swapped_for_another_iso_code_fails_currency_parity(billing):
    path, rows = billing
    out = _outcomes(path, rename_key(rows, "currency", "SEK", "USD"))
    assert not out["currencies_match_provider"].passed
    assert "SEK" in out["currencies_match_provider"].summary


def test_paid_after_failure_counted_as_first_attempt_fails_outcome_parity(billing):
    path, rows = billing
    month = sorted({r["month"] for r in rows})[1]
    moved = shift_provider_rows(rows, month, {
        ("invoice_outcomes", "outcome", "paid_after_failure"): -1,
        ("invoice_outcomes", "outcome", "first_attempt_success"): +1})
    out = _outcomes(path, moved)
    check = out["recovery_outcomes_match_provider"]
    assert not check.passed
    assert check.months == [month]
    assert {d["key"] for d in check.differences if d["month"] == month} == {
        "paid_after_failure", "first_attempt_success"}
    assert out["invoice_counts_match_provider"].passed


def test_tolerance_is_configuration(billing):
    path, rows = billing
    month = sorted({r["month"] for r in rows})[0]
    off_by_two = shift_provider_rows(rows, month, {("transactions", "total", ""): -2})
    assert not _outcomes(path, off_by_two)["transaction_counts_match_provider"].passed
    lenient = ReconciliationSettings.from_mappings(abs_tolerance={"transactions": 2})
    assert _outcomes(path, off_by_two, lenient)["transaction_counts_match_provider"].passed


def test_push_ledger_stand_in_compares_counts_and_reports_the_rest_as_not_reported(billing):
    path, rows = billing
    ledger_like = [r for r in rows if r["measure"] in ("invoices", "transactions")
                   and r["dimension"] == "total"]
    out = _outcomes(path, ledger_like)
    assert out["invoice_counts_match_provider"].passed
    assert out["recovery_outcomes_match_provider"].not_reported
    assert not out["provider_reports_every_measure"].passed
    assert "failed_transactions" in out["provider_reports_every_measure"].summary


def test_sandbox_counts_payload_is_read_into_long_rows():
    payload = {"months": {"2026-01": {
        "subscriptions": 3, "invoices": 5, "transactions": 7, "failed_transactions": 2,
        "invoices_by_currency": {"EUR": 4, "USD": 1}, "invoices_by_country": {"DE": 5},
        "transactions_by_currency": {"EUR": 6, "USD": 1},
        "outcomes": {"first_attempt_success": 3, "paid_after_failure": 2}}},
        "totals": {"invoices": 5}}
    rows = {(r["measure"], r["dimension"], r["key"]): r["value"]
            for r in provider_view.normalize_counts(payload)}
    assert rows == {("invoices", "total", ""): 5, ("transactions", "total", ""): 7,
                    ("failed_transactions", "total", ""): 2, ("invoices", "currency", "EUR"): 4,
                    ("invoices", "currency", "USD"): 1, ("invoices", "country", "DE"): 5,
                    ("invoice_outcomes", "outcome", "first_attempt_success"): 3,
                    ("invoice_outcomes", "outcome", "paid_after_failure"): 2}


def test_unreadable_counts_payload_is_a_clear_error():
    with pytest.raises(provider_view.CountsPayloadError, match="2026-01.invoices"):
        provider_view.normalize_counts({"months": {"2026-01": {"invoices": "many"}}})


def test_reconcile_summary_prints_totals_and_the_month_that_differs(billing):
    import io

    from rich.console import Console

    from recovery_pipeline.commands.reconcile import print_summary

    path, rows = billing
    month = sorted({r["month"] for r in rows})[0]
    con = duckdb.connect(str(path))
    provider_view.write_provider_counts(con, shift_provider_rows(rows, month, {("transactions", "total", ""): -3}))
    sqlrun.materialize(con, "reconciliation", "monthly_parity")
    out = io.StringIO()
    bad = print_summary(con, console=Console(file=out, width=200))
    con.close()
    text = out.getvalue()
    assert bad == 2  # the month and the total
    assert f"{month}" in text and "MISMATCH" in text and "state mismatches: not computed yet" in text
    assert "invoice_outcomes[paid_after_failure]" in text
