"""Fixtures shared by the provider sandbox / push / hand-off / adapter tests (imported by them)."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.provider_sandbox import SandboxConfig, create_app
from recovery_pipeline.providers import get_adapter
from recovery_pipeline.providers.http import ProviderClient, RetryPolicy

API_KEY = "test-provider-key"
FAST = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.01, jitter=0.001,
                   max_retry_after=0.05, max_429_wait=30)


@pytest.fixture
def ops_engine(tmp_path):
    engine = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(engine)
    yield engine
    engine.dispose()


def start_sandbox(**kw):
    kw.setdefault("api_key", API_KEY)
    kw.setdefault("requests_per_second", 1000.0)
    kw.setdefault("time_scale", 0.001)
    return serve_in_thread(create_app(SandboxConfig(**kw)))


@pytest.fixture
def sandbox():
    with start_sandbox() as url:
        yield url


def make_client(url: str, provider: str = "slicker", rps: float = 900.0, timeout: float = 5.0,
                policy: RetryPolicy | None = None) -> ProviderClient:
    p = policy or RetryPolicy(**FAST.__dict__)
    return ProviderClient(get_adapter(provider), url, API_KEY, rps, timeout=timeout, policy=p)


def stats(url: str) -> dict:
    return httpx.get(f"{url}/sandbox/stats").json()


def faults(url: str, **kw) -> None:
    httpx.post(f"{url}/sandbox/faults", json=kw).raise_for_status()


class Recorder:
    """A loopback HTTP endpoint that records requests and answers with scripted status codes."""

    def __init__(self, statuses: list[int] | None = None):
        self.calls: list[dict] = []
        self.statuses = list(statuses or [])

    def app(self) -> Starlette:
        async def any_post(request: Request):
            body = await request.body()
            self.calls.append({"path": request.url.path, "headers": dict(request.headers),
                               "body": body})
            status = self.statuses.pop(0) if self.statuses else 200
            return JSONResponse({"ok": status < 300, "echo": json.loads(body or b"null")},
                                status_code=status)

        return Starlette(routes=[Route("/{path:path}", any_post, methods=["POST"])])


def make_canonical_duckdb(path, data: dict) -> str:
    """A DuckDB warehouse with canonical.subscriptions/invoices/transactions from ``data`` rows."""
    import duckdb
    import pyarrow as pa

    con = duckdb.connect(str(path))
    con.execute("create schema if not exists canonical")
    for entity, rows in data.items():
        table = pa.Table.from_pylist([{k: v for k, v in r.items()
                                       if k not in ("invoice_created_at", "subscription_start")}
                                      for r in rows])
        con.register("incoming", table)
        con.execute(f"create or replace table canonical.{entity} as select * from incoming")
        con.unregister("incoming")
    con.close()
    return str(path)
