"""The SQL model runner: dependencies from sqlglot, dependency order, idempotent month re-runs."""

from __future__ import annotations

from datetime import UTC, datetime

from recovery_pipeline.sqlmodels.runner import discover, parse_model, to_postgres
from recovery_pipeline_tests.ingest_fixtures import World, load_and_model, query

M = "2025-03"
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


def test_dependencies_are_parsed_from_the_sql_and_ctes_are_not_tables():
    models = {m.name: m for m in discover(schema="canonical")}
    assert set(models) == {"subscriptions", "invoices", "transactions", "invoice_outcomes",
                           "quarantine"}
    assert models["invoice_outcomes"].deps == (("canonical", "invoices"),
                                               ("canonical", "transactions"))
    assert ("billing_raw", "invoices") in models["invoices"].deps
    assert ("canonical", "quarantine") in models["invoices"].deps
    assert all(d[0] != "reference" for m in models.values() for d in m.deps)


def test_models_run_in_dependency_order():
    order = [m.name for m in discover(schema="canonical")]
    assert order.index("quarantine") < order.index("invoices") < order.index("invoice_outcomes")
    assert order.index("transactions") < order.index("invoice_outcomes")


def test_parameters_are_bound_not_formatted(tmp_path):
    p = tmp_path / "canonical" / "x.sql"
    p.parent.mkdir()
    p.write_text("select a from billing_raw.t where _month = $month and b < $as_of")
    m = parse_model(p)
    assert m.params == ("as_of", "month")
    pg = to_postgres(m.sql)
    assert "%(month)s" in pg and "%(as_of)s" in pg


def test_json_object_transpiles_to_postgres_json_build_object():
    sql = "select json_object('a', x.a, 'b', x.b) as j from billing_raw.invoices as x"
    assert "JSON_BUILD_OBJECT('a', x.a, 'b', x.b)" in to_postgres(sql)


def _content(settings) -> dict:
    out = {}
    for t, key in [("invoices", "invoice_id"), ("transactions", "transaction_id"),
                   ("subscriptions", "subscription_id"), ("invoice_outcomes", "invoice_id"),
                   ("quarantine", "entity, record_id, reason")]:
        out[t] = query(settings, f"select * from canonical.{t} order by {key}")
    return out


def test_rerunning_a_month_changes_nothing(data_env):
    w = World()
    w.good_month(M, 3)
    inv = w.good_month(M, 1)[0]
    w.transaction(M, inv, "failed", 2)
    w.invoice(M, {"customer_id": "cus_ghost", "subscription_id": None, "amount_minor": 1,
                  "currency": "EUR"})
    w.write_exports(data_env.exports_dir)
    load_and_model(data_env, [M], as_of=AS_OF)
    before = _content(data_env)
    summary, results = load_and_model(data_env, [M], as_of=AS_OF)
    assert summary.total_rows == 0
    assert {r.model: r.deleted for r in results} == {r.model: r.rows for r in results}
    assert _content(data_env) == before
    assert len(before["invoices"]) == 4 and len(before["quarantine"]) == 1


def test_latest_version_of_a_record_wins(data_env):
    w = World()
    inv = w.good_month(M, 1)[0]
    w.write_exports(data_env.exports_dir)
    load_and_model(data_env, [M])
    # a later export of the same invoice, changed: refunded
    w2 = World()
    w2.add("invoices", M, **{**inv, "status": "refunded",
                             "updated_at": inv["updated_at"].replace(day=20)})
    w2.write_exports(data_env.exports_dir, suffix="-update")
    load_and_model(data_env, [M])
    assert query(data_env, "select count(*) from billing_raw.invoices")[0][0] == 2
    assert query(data_env, "select invoice_id, status from canonical.invoices") == [
        (inv["invoice_id"], "refunded")]
