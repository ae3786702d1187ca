"""PostgreSQL path: billing database on Postgres -> dlt -> Postgres warehouse -> canonical SQL
(transpiled from DuckDB's dialect by sqlglot)."""

from __future__ import annotations

import json

import pytest

from recovery_pipeline.settings import load_settings
from recovery_pipeline_tests.ingest_fixtures import CARD, World, load_and_model, query

M = "2025-03"


@pytest.fixture
def pg_env(data_env, pg_url, monkeypatch):
    monkeypatch.setenv("RECOVERY_WAREHOUSE", pg_url)
    monkeypatch.setenv("RECOVERY_BILLING_DB_URL", pg_url)
    return load_settings()


def test_postgres_billing_db_and_warehouse_build_invoices_and_quarantine(pg_env):
    w = World()
    w.good_month(M, 3)
    c = w.customer(M)
    s = w.subscription(M, c)
    inv = w.invoice(M, s)
    w.transaction(M, inv, "failed", 1)
    w.transaction(M, inv, "succeeded", 2, day=7)
    bad_currency = w.invoice(M, s, currency="XXQ")
    card = w.transaction(M, inv, "failed", 3, decline_message=f"pan {CARD}")
    w.write_sql(pg_env.billing_db_url)

    summary, results = load_and_model(pg_env, [M], kind="sql_database")
    assert summary.rows["invoices"] == 5
    assert {r.model: r.rows for r in results}["canonical.invoices"] == 4

    q = query(pg_env, "select record_id, reason, row_json from canonical.quarantine "
                      "order by record_id")
    assert [(r, why) for r, why, _ in q] == [(bad_currency["invoice_id"], "unknown_currency"),
                                               (card["transaction_id"], "card_number_like")]
    assert CARD not in q[1][2] and json.loads(q[1][2])["decline_message"] == "pan ************4242"
    outcome = query(pg_env, "select outcome from canonical.invoice_outcomes where invoice_id = $i",
                    {"i": inv["invoice_id"]})
    assert outcome == [("paid_after_failure",)]

    again, results2 = load_and_model(pg_env, [M], kind="sql_database")
    assert again.total_rows == 0
    assert {r.model: r.rows for r in results2} == {r.model: r.rows for r in results}
