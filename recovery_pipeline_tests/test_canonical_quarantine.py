"""Every quarantine reason: the row lands in canonical.quarantine with its reason and is kept out
of the canonical entity tables; the run goes on for the good rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from recovery_pipeline.settings import load_settings
from recovery_pipeline_tests.ingest_fixtures import CARD, World, load_and_model, query

M = "2025-03"
FUTURE = datetime(2031, 1, 1, tzinfo=UTC)


REASONS = ["missing_currency", "unknown_currency", "negative_amount", "unknown_state",
           "orphan_invoice", "orphan_transaction", "future_timestamp", "card_number_like"]


def _add_bad_row(w: World, reason: str, s: dict, good_inv: dict) -> tuple[str, str]:
    if reason == "missing_currency":
        bad = w.invoice(M, s, currency=None)
    elif reason == "unknown_currency":
        bad = w.invoice(M, s, currency="XXQ")
    elif reason == "negative_amount":
        bad = w.invoice(M, s, amount_minor=-2900)
    elif reason == "unknown_state":
        bad = w.invoice(M, s, status="weird")
    elif reason == "orphan_invoice":
        bad = w.invoice(M, {**s, "subscription_id": "sub_ghost"})
    elif reason == "future_timestamp":
        bad = w.invoice(M, s, created_at=FUTURE, updated_at=FUTURE)
    elif reason == "orphan_transaction":
        bad = w.transaction(M, {**good_inv, "invoice_id": "in_ghost"})
    elif reason == "card_number_like":
        bad = w.transaction(M, good_inv, "failed", 2, payment_method_token=CARD)
    else:
        raise AssertionError(reason)
    if "transaction_id" in bad:
        return "transactions", bad["transaction_id"]
    return "invoices", bad["invoice_id"]


@pytest.fixture(scope="module")
def bad_rows_loaded(tmp_path_factory):
    """One month with good rows and one bad row per reason, loaded and modelled once."""
    settings = load_settings({"RECOVERY_DATA_DIR": str(tmp_path_factory.mktemp("quarantine"))})
    settings.ensure_dirs()
    w = World()
    w.good_month(M, 2)
    c = w.customer(M)
    s = w.subscription(M, c)
    good_inv = w.invoice(M, s)
    w.transaction(M, good_inv)
    bad = {reason: _add_bad_row(w, reason, s, good_inv) for reason in REASONS}
    w.write_exports(settings.exports_dir)
    load_and_model(settings, [M])
    return settings, bad


@pytest.mark.parametrize("reason", REASONS)
def test_bad_row_is_quarantined_with_its_reason_and_kept_out(bad_rows_loaded, reason):
    settings, bad = bad_rows_loaded
    entity, record_id = bad[reason]
    q = query(settings, "select entity, reason, row_json from canonical.quarantine "
                        "where record_id = $id", {"id": record_id})
    assert [(e, why) for e, why, _ in q] == [(entity, reason)]
    assert json.loads(q[0][2])[f"{entity[:-1]}_id"] == record_id
    key = "transaction_id" if entity == "transactions" else "invoice_id"
    kept = query(settings, f"select count(*) from canonical.{entity} where {key} = $id",
                 {"id": record_id})[0][0]
    assert kept == 0


def test_good_rows_of_the_month_go_through(bad_rows_loaded):
    settings, bad = bad_rows_loaded
    assert query(settings, "select count(*) from canonical.quarantine")[0][0] == len(REASONS)
    assert query(settings, "select count(*) from canonical.invoices")[0][0] == 3
    assert query(settings, "select count(*) from canonical.transactions")[0][0] == 3


def test_quarantined_card_number_is_masked_in_row_json(bad_rows_loaded):
    settings, bad = bad_rows_loaded
    (row_json,) = query(settings, "select row_json from canonical.quarantine where record_id = $id",
                        {"id": bad["card_number_like"][1]})[0]
    assert CARD not in row_json
    assert json.loads(row_json)["payment_method_token"] == "************4242"


def test_unparseable_value_is_quarantined_as_invalid_value(data_env):
    w = World()
    w.good_month(M, 2)
    w.write_exports(data_env.exports_dir, fmt="csv")
    path = data_env.exports_dir / "transactions" / f"{M}.csv"
    text = path.read_text().splitlines()
    header = text[0].split(",")
    cells = text[1].split(",")
    cells[header.index("created_at")] = "yesterday-ish"
    text[1] = ",".join(cells)
    path.write_text("\n".join(text) + "\n")
    load_and_model(data_env, [M])
    q = query(data_env, "select entity, reason, detail from canonical.quarantine")
    assert q == [("transactions", "invalid_value", "unparseable: created_at")]
    assert query(data_env, "select count(*) from canonical.transactions")[0][0] == 1
