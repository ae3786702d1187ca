"""End to end with the demo data and the real provider sandbox: generate billing exports, load
them into canonical tables (ingest + canonical SQL), push them with the push engine, read
``GET /sandbox/counts`` and reconcile: parity passes. Delete one pushed invoice at the provider
and the invoice count check fails for exactly that month, naming it."""

from __future__ import annotations

import duckdb
import httpx
import pytest

from recovery_pipeline.billing_engine.generator import GenerateConfig, generate
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.ingest.months import history_months
from recovery_pipeline.ingest.pipeline import load_raw
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.provider_sandbox import SandboxConfig, create_app
from recovery_pipeline.providers import get_adapter
from recovery_pipeline.providers.http import ProviderClient, RetryPolicy
from recovery_pipeline.providers.push import iter_canonical_duckdb, push_all
from recovery_pipeline.reconciliation import checking, parity, provider_view, sqlrun
from recovery_pipeline.sqlmodels.runner import run_month

API_KEY = "recon-test-key"


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recon_sandbox")
    engine = create_ops_engine(f"sqlite:///{tmp / 'ops.sqlite'}")
    init_ops_store(engine)
    wh = str(tmp / "wh.duckdb")
    generate(GenerateConfig(seed=11, months=3, invoices_per_month=60), exports_dir=tmp / "exports",
             formats=("parquet",))
    months = history_months(3)
    load_raw("exports", months, warehouse=wh, data_dir=tmp, exports_dir=tmp / "exports",
             formats=("parquet",))
    for m in months:
        run_month(wh, m)
    app = create_app(SandboxConfig(api_key=API_KEY, requests_per_second=1000.0, time_scale=0.001))
    with serve_in_thread(app) as url:
        client = ProviderClient(get_adapter("slicker"), url, API_KEY, 900.0, timeout=5.0,
                                policy=RetryPolicy(max_attempts=3, backoff_initial=0.001,
                                                   backoff_max=0.01, jitter=0.001))
        with duckdb.connect(wh) as con, client:
            push_all(engine, client, lambda e: iter_canonical_duckdb(con, e))
        yield {"url": url, "wh": wh, "engine": engine}
    engine.dispose()


def _reconcile(wh, rows):
    with duckdb.connect(wh) as con:
        provider_view.write_provider_counts(con, rows)
        sqlrun.materialize(con, "reconciliation", "monthly_parity")
        frame = parity.read_parity(con)
    return {o.name: o for o in checking.parity_outcomes(frame)}


def test_a_full_push_reconciles_with_the_sandbox_counts(pushed):
    out = _reconcile(pushed["wh"], provider_view.fetch_sandbox_counts(pushed["url"]))
    assert all(o.passed and not o.not_reported for n, o in out.items()
               if n != "provider_reports_every_measure"), {n: o.summary for n, o in out.items()}


def test_push_ledger_stand_in_agrees_on_record_counts(pushed):
    out = _reconcile(pushed["wh"], provider_view.ledger_counts(pushed["engine"], "slicker"))
    assert out["invoice_counts_match_provider"].passed
    assert out["transaction_counts_match_provider"].passed
    assert out["recovery_outcomes_match_provider"].not_reported


def test_deleting_one_invoice_at_the_provider_fails_the_count_for_that_month_only(pushed):
    with duckdb.connect(pushed["wh"]) as con:
        invoice_id, month = con.execute(
            "select invoice_id, month from canonical.invoices order by month desc, invoice_id limit 1"
        ).fetchone()
    resp = httpx.post(f"{pushed['url']}/sandbox/records/invoices/{invoice_id}/delete")
    assert resp.json() == {"deleted": True}
    out = _reconcile(pushed["wh"], provider_view.fetch_sandbox_counts(pushed["url"]))
    check = out["invoice_counts_match_provider"]
    assert not check.passed
    assert check.months == [month]
    assert [(d["month"], d["difference"]) for d in check.differences if d["month"] != "total"] == [(month, 1)]
    assert out["currencies_match_provider"].passed and out["countries_covered_at_provider"].passed
