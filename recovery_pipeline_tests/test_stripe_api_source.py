"""The Stripe API dlt source against a local Stripe-shaped HTTP server (list pagination, created
ranges, status filters, expand), loading billing rows into DuckDB ``billing_raw``."""

from __future__ import annotations

import copy

import dlt
import duckdb
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from recovery_pipeline.billing_engine import schema as bs
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.ingest.contract import LINEAGE_COLUMNS
from recovery_pipeline.stripe_connector.api_source import stripe_api_source
from recovery_pipeline_tests import stripe_testkit as k

KEY = "rk_test_restricted"
DAY = 86400


class FakeStripe:
    """Stripe-shaped list and retrieve endpoints over in-memory objects."""

    def __init__(self, objects: dict[str, list[dict]]):
        self.objects = objects
        self.requests: list[str] = []

    def _auth(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {KEY}"

    async def list(self, request: Request):
        if not self._auth(request):
            return JSONResponse({"error": {"message": "Invalid API Key provided"}}, status_code=401)
        kind = request.path_params["kind"]
        q = request.query_params
        self.requests.append(f"{kind}?{q}")
        items = sorted(self.objects.get(kind, []), key=lambda o: (-o["created"], o["id"]))  # newest first
        if "created[gte]" in q:
            items = [o for o in items if o["created"] >= int(q["created[gte]"])]
        if "created[lt]" in q:
            items = [o for o in items if o["created"] < int(q["created[lt]"])]
        status = q.get("status")
        if status and status != "all":
            items = [o for o in items if o.get("status") == status]
        elif kind == "subscriptions" and status != "all":
            items = [o for o in items if o.get("status") != "canceled"]
        if "starting_after" in q:
            ids = [o["id"] for o in items]
            items = items[ids.index(q["starting_after"]) + 1:]
        limit = int(q.get("limit", 10))
        page = [copy.deepcopy(o) for o in items[:limit]]
        for field in ("invoice", "subscription"):
            if f"data.{field}" in q.getlist("expand[]"):
                for o in page:
                    self._expand(o, field)
        return JSONResponse({"object": "list", "url": f"/v1/{kind}", "has_more": len(items) > limit,
                             "data": page})

    async def retrieve(self, request: Request):
        if not self._auth(request):
            return JSONResponse({"error": {"message": "Invalid API Key provided"}}, status_code=401)
        kind, oid = request.path_params["kind"], request.path_params["oid"]
        self.requests.append(f"{kind}/{oid}")
        for o in self.objects.get(kind, []):
            if o["id"] == oid:
                o = copy.deepcopy(o)
                for field in request.query_params.getlist("expand[]"):
                    self._expand(o, field)
                return JSONResponse(o)
        return JSONResponse({"error": {"message": f"No such {kind}: {oid}"}}, status_code=404)

    def _expand(self, obj: dict, field: str) -> None:
        by_id = {o["id"]: o for o in self.objects.get(field + "s", [])}
        if obj.get(field) in by_id:
            obj[field] = copy.deepcopy(by_id[obj[field]])

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/{kind}", self.list), Route("/v1/{kind}/{oid}", self.retrieve)])


def _pipeline(tmp_path, name="stripe_api_test"):
    return dlt.pipeline(pipeline_name=name, pipelines_dir=str(tmp_path / "pipelines"),
                        destination=dlt.destinations.duckdb(str(tmp_path / "wh.duckdb")),
                        dataset_name="billing_raw")


def _query(tmp_path, sql):
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _world():
    old = k.invoice("in_old", status="open", attempt_count=1, created=k.T0 - 40 * DAY)
    lost = k.invoice("in_lost", status="open", attempt_count=3, created=k.T0 - 35 * DAY)
    many = [k.invoice(f"in_{n:03d}", status="paid", attempt_count=1, created=k.T0 + n, paid_at=k.T0 + n)
            for n in range(150)]  # two pages of 100
    return {
        "customers": [k.customer()],
        "subscriptions": [k.subscription(status="past_due", created=k.T0 - 60 * DAY)],
        "invoices": [old, lost] + many,
        "charges": [k.charge("ch_old1", "in_old", status="failed", created=k.T0 - 40 * DAY + 5)],
    }


def test_backfill_pages_through_a_created_range_into_billing_raw(tmp_path):
    fake = FakeStripe(_world())
    with serve_in_thread(fake.app()) as url:
        src = stripe_api_source(stripe_api_key=KEY, stripe_base_url=url, created_gte=k.T0, created_lt=k.T0 + 120)
        _pipeline(tmp_path).run(src)
    assert _query(tmp_path, "select count(*) from billing_raw.invoices") == [(120,)]
    assert any("starting_after" in r for r in fake.requests)  # paged
    cols = [r[0] for r in _query(tmp_path, "select column_name from information_schema.columns "
                                           "where table_schema='billing_raw' and table_name='invoices' "
                                           "and column_name not like '\\_dlt%' escape '\\'")]
    assert set(cols) == {c.name for c in bs.invoices.columns} | set(LINEAGE_COLUMNS)
    assert _query(tmp_path, "select distinct _source, _month from billing_raw.invoices") == [("stripe_api", "2025-10")]


def test_incremental_run_picks_up_an_old_invoice_that_changed(tmp_path):
    world = _world()
    fake = FakeStripe(world)
    with serve_in_thread(fake.app()) as url:
        pipe = _pipeline(tmp_path)
        pipe.run(stripe_api_source(stripe_api_key=KEY, stripe_base_url=url, initial_created=k.T0 - 90 * DAY))
        assert _query(tmp_path, "select status from billing_raw.invoices where invoice_id='in_old'") == [("open",)]
        # 40-day-old invoice gets paid by a retry now; the subscription's dunning ends elsewhere
        old = world["invoices"][0]
        old.update(status="paid", attempt_count=2, amount_paid=old["amount_due"])
        old["status_transitions"]["paid_at"] = k.T0 + 500
        world["charges"].append(k.charge("ch_old2", "in_old", status="succeeded", created=k.T0 + 499))
        world["subscriptions"][0].update(status="canceled", canceled_at=k.T0 + 600, ended_at=k.T0 + 600,
                                         cancellation_details={"reason": "payment_failed"})
        fake.requests.clear()
        pipe.run(stripe_api_source(stripe_api_key=KEY, stripe_base_url=url, initial_created=k.T0 - 90 * DAY))
    # the created cursor moved: the second run did not re-list old history ...
    assert all(f"created%5Bgte%5D={k.T0 - 90 * DAY}" not in r for r in fake.requests)
    # ... yet the old invoice's change was found by the open-invoice re-scan
    assert "invoices/in_old" in fake.requests, fake.requests
    assert _query(tmp_path, "select status, attempt_count from billing_raw.invoices where invoice_id='in_old'") == [
        ("paid", 2)]
    assert _query(tmp_path, "select transaction_id, status, attempt_number, subscription_id "
                            "from billing_raw.transactions order by attempt_number") == [
        ("ch_old1", "failed", 1, "sub_1"), ("ch_old2", "succeeded", 2, "sub_1")]
    assert "subscriptions/sub_1" in fake.requests, fake.requests
    ((status, dunning),) = _query(tmp_path, "select status, epoch(dunning_complete_at) "
                                            "from billing_raw.subscriptions")
    assert (status, int(dunning)) == ("canceled", k.T0 + 600)
    # end of dunning reaches the subscription's still-open invoice (canonical: unrecovered) ...
    assert _query(tmp_path, "select status, epoch(dunning_complete_at) from billing_raw.invoices "
                            "where invoice_id='in_lost'") == [("open", k.T0 + 600)]
    # ... not the one that got paid
    assert _query(tmp_path, "select dunning_complete_at from billing_raw.invoices "
                            "where invoice_id='in_old'") == [(None,)]


def test_fixture_shaped_objects_load_through_the_api_source(tmp_path):
    if not k.fixtures_present():
        import pytest

        pytest.skip(f"Stripe's published fixtures are read from {k.FIXTURES}, absent here")
    inv, sub, cus = k.fixture("invoice"), k.fixture("subscription"), k.fixture("customer")
    fake = FakeStripe({"invoices": [inv], "subscriptions": [sub], "customers": [cus], "charges": []})
    with serve_in_thread(fake.app()) as url:
        _pipeline(tmp_path).run(stripe_api_source(stripe_api_key=KEY, stripe_base_url=url, rescan=False))
    assert _query(tmp_path, "select invoice_id, subscription_id, amount_minor, currency from billing_raw.invoices") == [
        (inv["id"], "subscription", inv["amount_due"], "USD")]
    price_id = sub["items"]["data"][0]["price"]["id"]
    assert _query(tmp_path, "select plan_id from billing_raw.subscriptions") == [(price_id,)]


def test_api_key_is_injected_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", KEY)
    fake = FakeStripe({"customers": [k.customer()]})
    with serve_in_thread(fake.app()) as url:
        _pipeline(tmp_path).run(stripe_api_source(stripe_base_url=url, rescan=False))
    assert _query(tmp_path, "select customer_id, country from billing_raw.customers") == [("cus_1", "DE")]


def test_client_retries_429_and_5xx_then_pages_on(monkeypatch):
    from recovery_pipeline.stripe_connector import api_source

    monkeypatch.setattr(api_source, "_backoff", lambda state: 0.0)
    fake = FakeStripe({"customers": [k.customer(f"cus_{n}") for n in range(3)]})
    answers = iter([429, 503])

    async def flaky(request: Request):
        code = next(answers, None)
        if code is not None:
            fake.requests.append(f"HTTP {code}")
            return JSONResponse({"error": {"message": "slow down"}}, status_code=code,
                                headers={"Retry-After": "0"})
        return await fake.list(request)

    app = Starlette(routes=[Route("/v1/{kind}", flaky)])
    with serve_in_thread(app) as url:
        client = api_source.StripeClient(KEY, url, page_limit=2)
        try:
            ids = [c["id"] for c in client.list("/v1/customers", {})]
        finally:
            client.close()
    assert sorted(ids) == ["cus_0", "cus_1", "cus_2"]
    assert fake.requests[:2] == ["HTTP 429", "HTTP 503"]


def test_client_does_not_retry_a_bad_key():
    from recovery_pipeline.stripe_connector.api_source import StripeAPIError, StripeClient

    fake = FakeStripe({"customers": [k.customer()]})
    with serve_in_thread(fake.app()) as url:
        client = StripeClient("rk_test_wrong", url)
        try:
            client.get("/v1/customers")
        except StripeAPIError as exc:
            assert "401" in str(exc) and "rk_test_wrong" not in str(exc)
        else:
            raise AssertionError("a bad key was accepted")
        finally:
            client.close()
