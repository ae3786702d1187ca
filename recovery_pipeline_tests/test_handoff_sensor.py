"""failed_transactions_sensor: a cursor (watermark), deterministic run keys, and the hand-off
asset run it requests."""

from __future__ import annotations

import json
import warnings

import dagster as dg
import duckdb
import httpx

from recovery_pipeline.defs.provider_sync import assets as ps_assets
from recovery_pipeline.defs.provider_sync.sensors import (
    HANDOFF_OP,
    evaluate_failed_transactions,
    failed_transactions_sensor,
)
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.providers.source import new_failures_duckdb
from recovery_pipeline.providers.synthetic import generate
from recovery_pipeline.resources import (
    BillingEngineResource,
    OpsStoreResource,
    ProviderResource,
    WarehouseResource,
)
from recovery_pipeline_tests.provider_fixtures import (  # noqa: F401
    API_KEY,
    Recorder,
    make_canonical_duckdb,
    sandbox,
    stats,
)

warnings.filterwarnings("ignore", category=dg.BetaWarning)
DATA = generate(40, seed=13, failure_rate=0.9)
OPEN_FAILED = sorted(
    (t for t in DATA["transactions"] if t["status"] == "failed" and t["invoice_id"] in {
        i["invoice_id"] for i in DATA["invoices"] if i["status"] == "open"}),
    key=lambda t: (t["created_at"], t["transaction_id"]))


def _ids(req) -> list[str]:
    return req.run_config["ops"][HANDOFF_OP]["config"]["transaction_ids"]


def _fetch(wh):
    def fetch(ts, tid, n):
        with duckdb.connect(wh, read_only=True) as con:
            return new_failures_duckdb(con, ts, tid, n)
    return fetch


def test_sensor_requests_new_failures_once_and_advances_its_cursor(tmp_path):
    wh = make_canonical_duckdb(tmp_path / "wh.duckdb", DATA)
    first = evaluate_failed_transactions(_fetch(wh), None, max_rows=5)
    req = first.run_requests[0]
    ids = _ids(req)
    assert ids == [t["transaction_id"] for t in OPEN_FAILED[:5]]
    assert json.loads(first.cursor)["transaction_id"] == ids[-1]
    again = evaluate_failed_transactions(_fetch(wh), None, max_rows=5)
    assert again.run_requests[0].run_key == req.run_key  # deterministic
    nxt = evaluate_failed_transactions(_fetch(wh), first.cursor, max_rows=1000)
    rest = _ids(nxt.run_requests[0])
    assert rest == [t["transaction_id"] for t in OPEN_FAILED[5:]]
    done = evaluate_failed_transactions(_fetch(wh), nxt.cursor)
    assert not done.run_requests and done.cursor == nxt.cursor


def test_a_new_failure_after_the_cursor_is_noticed(tmp_path):
    wh = make_canonical_duckdb(tmp_path / "wh.duckdb", DATA)
    seen = evaluate_failed_transactions(_fetch(wh), None, max_rows=1000)
    late = dict(OPEN_FAILED[0], transaction_id="tx_late", created_at=OPEN_FAILED[-1]["created_at"]
                .replace(year=2027))
    with duckdb.connect(wh) as con:
        con.execute("insert into canonical.transactions by name select * from (select "
                    "$transaction_id as transaction_id, $invoice_id as invoice_id, "
                    "$customer_id as customer_id, 'failed' as status, 100 as amount_minor, "
                    "$created_at as created_at)", {k: late[k] for k in (
                        "transaction_id", "invoice_id", "customer_id", "created_at")})
    nxt = evaluate_failed_transactions(_fetch(wh), seen.cursor)
    assert _ids(nxt.run_requests[0]) == ["tx_late"]


def test_sensor_definition_runs_with_resources_and_is_running_by_default(tmp_path):
    wh = make_canonical_duckdb(tmp_path / "wh.duckdb", DATA)
    ctx = dg.build_sensor_context(resources={"warehouse": WarehouseResource(target=wh)})
    result = failed_transactions_sensor(ctx)
    assert result.run_requests and json.loads(result.cursor)["transaction_id"]
    assert failed_transactions_sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_requested_run_hands_off_and_marks_billing(tmp_path, sandbox):
    wh = make_canonical_duckdb(tmp_path / "wh.duckdb", DATA)
    req = evaluate_failed_transactions(_fetch(wh), None, max_rows=1000).run_requests[0]
    billing = Recorder()
    with serve_in_thread(billing.app()) as billing_url:
        resources = {
            "provider": ProviderResource(integration_file="", base_url=sandbox, api_key=API_KEY,
                                         provider="revtain", batch_size=1,
                                         requests_per_second=500, max_receive_count=2),
            "warehouse": WarehouseResource(target=wh),
            "ops_store": OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}"),
            "billing_engine": BillingEngineResource(base_url=billing_url, api_key="k"),
        }
        for _ in range(2):  # a re-run of the same request sends nothing new
            result = dg.materialize([ps_assets.failure_handoffs], resources=resources,
                                    run_config=req.run_config)
            assert result.success
    invoices = {t["invoice_id"] for t in OPEN_FAILED}
    s = stats(sandbox)["revtain"]
    assert s["charges"] + s["blocked"] + s["duplicates"] >= len(invoices) - 0
    assert s["executions"] == s["charges"]
    marked = {c["path"].split("/")[2] for c in billing.calls}
    assert marked <= invoices and len(billing.calls) == len(marked)
    assert httpx.get(f"{sandbox}/healthz").json() == {"ok": True}
