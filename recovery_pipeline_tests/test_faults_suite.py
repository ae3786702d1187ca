"""Fault suite (issue 7): provider faults during a full push, and a Dagster push run killed with
SIGKILL mid-way then re-run. Loopback only, bounded in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import sqlalchemy as sa

from recovery_pipeline.opsstore.models import dead_letters, request_log
from recovery_pipeline.providers.http import RetryPolicy
from recovery_pipeline.providers.push import PushSettings, push_all, redrive
from recovery_pipeline.providers.synthetic import chunks, generate
from recovery_pipeline_tests.provider_fixtures import (  # noqa: F401
    API_KEY,
    faults,
    make_canonical_duckdb,
    make_client,
    ops_engine,
    sandbox,
    stats,
)


def _expected(data) -> dict:
    return {e: len(rows) for e, rows in data.items()}


def test_full_push_under_mixed_provider_faults_ends_in_exact_parity(ops_engine, sandbox):
    data = generate(150, seed=21)
    faults(sandbox, fraction_5xx=0.2, fraction_timeouts=0.05, fraction_drop=0.05, burst_429=6,
           retry_after=0.01, timeout_seconds=1.0, seed=5)
    policy = RetryPolicy(max_attempts=4, backoff_initial=0.001, backoff_max=0.01, jitter=0.001,
                         max_retry_after=0.05, max_429_wait=30)
    with make_client(sandbox, timeout=0.3, policy=policy) as client:
        push_all(ops_engine, client, lambda e: chunks(data[e], 100),
                 PushSettings(batch_size=25, max_receive_count=4))
        with ops_engine.connect() as conn:
            attempts = conn.execute(sa.select(sa.func.sum(request_log.c.attempts))).scalar_one()
            batches = conn.execute(sa.select(sa.func.count()).select_from(request_log)).scalar_one()
        assert attempts > batches  # faults were injected and retried
        faults(sandbox)  # the incident ends; whatever was dead-lettered is redriven
        redrive(ops_engine, client)
    s = stats(sandbox)
    assert s["records_by_entity"] == _expected(data)  # provider count == billing count
    with ops_engine.connect() as conn:
        waiting = conn.execute(sa.select(sa.func.count()).select_from(dead_letters)
                               .where(dead_letters.c.status == "dead")).scalar_one()
    assert waiting == 0


KILLABLE_PUSH = textwrap.dedent("""
    import sys, dagster as dg
    from recovery_pipeline.defs.provider_sync import assets as a
    from recovery_pipeline.resources import OpsStoreResource, ProviderResource, WarehouseResource
    url, wh, ops, key = sys.argv[1:5]
    res = {"provider": ProviderResource(integration_file="", base_url=url, api_key=key,
                                        provider="slicker", batch_size=10, requests_per_second=8,
                                        max_receive_count=3, concurrency=1),
           "warehouse": WarehouseResource(target=wh), "ops_store": OpsStoreResource(url=ops)}
    dg.materialize([a.pushed_subscriptions, a.pushed_invoices, a.pushed_transactions], resources=res)
""")


def test_a_dagster_push_run_killed_mid_way_and_rerun_leaves_no_duplicate(tmp_path, sandbox):
    import dagster as dg

    from recovery_pipeline.defs.provider_sync import assets as a
    from recovery_pipeline.resources import OpsStoreResource, ProviderResource, WarehouseResource

    data = generate(120, seed=4)
    wh = make_canonical_duckdb(tmp_path / "wh.duckdb", data)
    ops = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE_PUSH, sandbox, wh, ops, API_KEY],
                            env=dict(os.environ, DAGSTER_HOME=str(tmp_path)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while stats(sandbox)["records_by_entity"].get("subscriptions", 0) < 20:
            assert proc.poll() is None, "the push finished before it could be killed"
            assert time.monotonic() < deadline, "the push never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = stats(sandbox)["records_by_entity"]
    assert partial != _expected(data)  # killed mid-way

    res = {"provider": ProviderResource(integration_file="", base_url=sandbox, api_key=API_KEY,
                                        provider="slicker", batch_size=10, requests_per_second=500,
                                        max_receive_count=3),
           "warehouse": WarehouseResource(target=wh), "ops_store": OpsStoreResource(url=ops)}
    assert dg.materialize([a.pushed_subscriptions, a.pushed_invoices, a.pushed_transactions],
                          resources=res).success
    assert stats(sandbox)["records_by_entity"] == _expected(data)
    counts = httpx.get(f"{sandbox}/sandbox/counts").json()["totals"]
    assert counts["invoices"] == 120
