"""Every quarantine reason: the row lands in canonical.quarantine with its reason and is kept out
of the canonical entity tables; the run goes on for the good rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from recovery_pipeline_tests.ingest_fixtures import CARD, World, load_and_model, query

M = "2025-03"
FUTURE = datetime(2031, 1, 1, tzinfo=UTC)


def _bad_world(reason: str):
    w = World()
    w.good_month(M, 2)
    c = w.customer(M)
    s = w.subscription(M, c)
    good_inv = w.invoice(M, s)
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
    entity = "transactions" if "transaction_id" in bad else "invoices"
    key = "transaction_id" if entity == "transactions" else "invoice_id"
    return w, entity, bad[key]


@pytest.mark.parametrize("reason", [
    "missing_currency", "unknown_currency", "negative_amount", "unknown_state", "orphan_invoice",
    "orphan_transaction", "future_timestamp", "card_number_like",
])
def test_bad_row_is_quarantined_with_its_reason_and_kept_out(data_env, reason):
    w, entity, record_id = _bad_world(reason)
    w.write_exports(data_env.exports_dir)
    load_and_model(data_env, [M])
    q = query(data_env, "select entity, record_id, reason, row_json from canonical.quarantine")
    assert [(e, r, why) for e, r, why, _ in q] == [(entity, record_id, reason)]
    row = json.loads(q[0][3])
    assert row[f"{entity[:-1]}_id"] == record_id
    key = "transaction_id" if entity == "transactions" else "invoice_id"
    kept = query(data_env, f"select count(*) from canonical.{entity} where {key} = $id",
                 {"id": record_id})[0][0]
    assert kept == 0
    good = query(data_env, "select count(*) from canonical.invoices")[0][0]
    assert good >= 3  # the good rows of the month went through


def test_quarantined_card_number_is_masked_in_row_json(data_env):
    w, _, _ = _bad_world("card_number_like")
    w.write_exports(data_env.exports_dir)
    load_and_model(data_env, [M])
    (row_json,) = query(data_env, "select row_json from canonical.quarantine")[0]
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
