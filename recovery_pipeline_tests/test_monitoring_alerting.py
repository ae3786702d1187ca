"""Monitoring alerts: a stale source, stopped polling, dead letters piling up, failed runs.

Each sends exactly one alert to a local Slack stand-in and one resolved message after the fix.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from recovery_pipeline.defs.monitoring.assets import source_freshness
from recovery_pipeline.defs.monitoring.checks import source_freshness_checks
from recovery_pipeline.defs.monitoring.sensors import (
    alerting_sensor,
    run_failure_alert,
    run_success_resolves_alert,
)
from recovery_pipeline.opsstore.models import dead_letters, poll_state
from recovery_pipeline.reconciliation import synthetic
from recovery_pipeline.resources import OpsStoreResource, ReconciliationConfig, WarehouseResource
from recovery_pipeline_tests._recon_helpers import slack_capture


@pytest.fixture
def env(tmp_path, monkeypatch):
    wh = tmp_path / "warehouse.duckdb"
    now = datetime.now(UTC)
    with duckdb.connect(str(wh)) as con:
        synthetic.generate(con, 200, months=3, start=now - timedelta(days=90), as_of=now)
    with slack_capture() as slack:
        monkeypatch.setenv("ALERT_SLACK_WEBHOOK_URL", slack.url)
        resources = {
            "warehouse": WarehouseResource(target=str(wh)),
            "ops_store": OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}"),
            "reconciliation": ReconciliationConfig(provider="slicker", max_source_lag_hours=24,
                                                   dead_letter_threshold=3, poll_stale_minutes=30),
        }
        yield {"wh": str(wh), "slack": slack, "resources": resources,
               "instance": dg.DagsterInstance.ephemeral(), "cursor": None}


def _tick(env):
    defs = dg.Definitions(assets=[source_freshness], asset_checks=[source_freshness_checks],
                          resources=env["resources"])
    ctx = dg.build_sensor_context(instance=env["instance"], cursor=env["cursor"], definitions=defs,
                                  resources={k: env["resources"][k] for k in ("ops_store", "reconciliation")})
    result = alerting_sensor(ctx)
    env["cursor"] = result.cursor
    return result


def _freshness(env):
    return dg.materialize([source_freshness, source_freshness_checks], resources=env["resources"],
                          instance=env["instance"], raise_on_error=False)


def _age_transactions(env, hours: int):
    with duckdb.connect(env["wh"]) as con:
        con.execute("update canonical.transactions set updated_at = updated_at + to_hours(cast(? as bigint))",
                    [hours])


def test_stale_source_fails_freshness_alerts_once_and_resolves(env):
    ok = _freshness(env)
    assert all(e.passed for e in ok.get_asset_check_evaluations())
    _age_transactions(env, -24 * 10)
    stale = _freshness(env)
    failed = {e.check_name for e in stale.get_asset_check_evaluations() if not e.passed}
    assert failed == {"transactions_are_fresh"}
    _tick(env)
    _tick(env)
    alerts = env["slack"].alerts()
    assert len(alerts) == 1 and "transactions_are_fresh" in alerts[0]
    _age_transactions(env, 24 * 10)
    _freshness(env)
    _tick(env)
    assert len(env["slack"].resolutions()) == 1
    assert len(env["slack"].alerts()) == 1


def test_stopped_polling_and_dead_letters_alert_once_and_resolve(env):
    engine = env["resources"]["ops_store"].engine()
    now = datetime.now(UTC)
    with engine.begin() as c:
        c.execute(sa.insert(poll_state).values(name="slicker_recovery_actions", cursor=None,
                                               last_success_at=now - timedelta(hours=2),
                                               last_attempt_at=now, consecutive_failures=4,
                                               last_error="HTTP 503"))
        for i in range(3):
            c.execute(sa.insert(dead_letters).values(kind="push", provider="slicker", entity="invoices",
                                                     ref=f"batch_{i}", attempts=5, last_error="HTTP 500",
                                                     created_at=now, status="dead"))
    _tick(env)
    _tick(env)
    alerts = env["slack"].alerts()
    assert len(alerts) == 2
    assert any("slicker_recovery_actions" in a and "4 consecutive failures" in a for a in alerts)
    assert any("3 dead letters" in a for a in alerts)
    with engine.begin() as c:
        c.execute(sa.update(poll_state).values(last_success_at=datetime.now(UTC), consecutive_failures=0))
        c.execute(sa.update(dead_letters).values(status="redriven"))
    _tick(env)
    _tick(env)
    assert len(env["slack"].resolutions()) == 2
    assert len(env["slack"].alerts()) == 2


def test_failed_run_alerts_once_and_a_successful_run_resolves(env):
    state = {"fail": True}

    @dg.asset(name="flaky")
    def flaky():
        if state["fail"]:
            raise RuntimeError("provider down")

    job = dg.define_asset_job("flaky_job", selection=[flaky])
    defs = dg.Definitions(assets=[flaky], jobs=[job])
    instance = env["instance"]
    res = {"ops_store": env["resources"]["ops_store"]}
    for _ in range(2):  # two failed runs of the same job: one incident
        failed = defs.resolve_job_def("flaky_job").execute_in_process(instance=instance, raise_on_error=False)
        ctx = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert", dagster_event=failed.get_run_failure_event(),
            dagster_instance=instance, dagster_run=failed.dagster_run, resources=res).for_run_failure()
        run_failure_alert(ctx)
    alerts = env["slack"].alerts()
    assert len(alerts) == 1 and "flaky_job" in alerts[0] and "failed" in alerts[0]
    state["fail"] = False
    ok = defs.resolve_job_def("flaky_job").execute_in_process(instance=instance)
    ctx = dg.build_run_status_sensor_context(
        sensor_name="run_success_resolves_alert", dagster_event=ok.get_run_success_event(),
        dagster_instance=instance, dagster_run=ok.dagster_run, resources=res)
    run_success_resolves_alert(ctx)
    assert len(env["slack"].resolutions()) == 1 and "flaky_job" in env["slack"].resolutions()[0]
