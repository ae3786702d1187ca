"""Dagster wiring: the execution sensor (run keys, kill switch), the assets, the CLI kill switch."""

from __future__ import annotations

import json

import dagster as dg
import sqlalchemy as sa

from recovery_pipeline.cli import main as cli_main
from recovery_pipeline.defs.provider_feedback.assets import polled_recovery_actions, webhook_events
from recovery_pipeline.defs.recovery_execution.assets import executed_actions
from recovery_pipeline.defs.recovery_execution.sensors import execution_sensor
from recovery_pipeline.execution.killswitch import is_kill_switch_on, set_kill_switch
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.opsstore.models import alert_incidents, executed_actions as audit, poll_state
from recovery_pipeline.provider_sandbox.app import SandboxConfig, create_app as sandbox_app
from recovery_pipeline.resources import (
    BillingDatabaseResource,
    BillingEngineResource,
    ExecutionSettingsResource,
    OpsStoreResource,
)
from recovery_pipeline_tests._execution_fakes import add_inbox, future, ops_engine, past, slicker_event
from recovery_pipeline_tests.test_execution_billing_http import KEY, _billing_db


def _resources(tmp_path, *, mode="live", poll_enabled=False, provider_url="http://127.0.0.1:9",
               billing_url="http://127.0.0.1:9"):
    integration = tmp_path / "integration.yaml"
    integration.write_text("recovery_execution: hybrid\nprovider:\n  name: slicker\n  max_receive_count: 3\n")
    return {
        "ops_store": OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}"),
        "execution_settings": ExecutionSettingsResource(
            integration_file=str(integration), mode=mode, provider_base_url=provider_url,
            provider_api_key="k-test", poll_enabled=poll_enabled, poll_failure_threshold=1),
        "billing_engine": BillingEngineResource(base_url=billing_url, api_key=KEY),
        "billing_db": BillingDatabaseResource(url=f"sqlite:///{tmp_path / 'billing.sqlite'}"),
    }


def _tick(resources, cursor=None):
    ctx = dg.build_sensor_context(resources={k: resources[k] for k in ("ops_store", "execution_settings")},
                                  cursor=cursor)
    return execution_sensor(ctx)


def test_execution_sensor_requests_one_deterministic_run_for_due_work(tmp_path):
    resources = _resources(tmp_path)
    engine = ops_engine(tmp_path)
    add_inbox(engine, "slicker", "evt_1", slicker_event("evt_1", "pause_collection", "in_1"))
    first = _tick(resources)
    again = _tick(resources, first.cursor)
    assert len(first.run_requests) == 1
    assert first.run_requests[0].run_key == again.run_requests[0].run_key
    add_inbox(engine, "slicker", "evt_2", slicker_event("evt_2", "pause_collection", "in_2"))
    moved = _tick(resources, again.cursor)
    assert moved.run_requests[0].run_key != first.run_requests[0].run_key


def test_execution_sensor_skips_while_retries_wait_for_their_ideal_time(tmp_path):
    resources = _resources(tmp_path)
    engine = ops_engine(tmp_path)
    add_inbox(engine, "slicker", "evt_1", slicker_event("evt_1", "recovery_action", "in_1",
                                                        "ACTION_SUGGESTION_RETRY", ideal=future(30)))
    result = _tick(resources)
    assert not result.run_requests and "1 waiting" in result.skip_reason.skip_message


def test_kill_switch_makes_the_execution_sensor_skip_on_the_next_tick(tmp_path):
    resources = _resources(tmp_path)
    engine = ops_engine(tmp_path)
    add_inbox(engine, "slicker", "evt_1", slicker_event("evt_1", "pause_collection", "in_1"))
    assert _tick(resources).run_requests
    set_kill_switch(engine, True, by="test")
    paused = _tick(resources)
    assert not paused.run_requests and "kill switch is ON" in paused.skip_reason.skip_message


def test_kill_switch_cli_flips_the_ops_store_flag(tmp_path, data_env, capsys):
    assert cli_main(["kill-switch", "on", "--by", "oncall"]) == 0
    assert "ON" in capsys.readouterr().out
    from recovery_pipeline.opsstore import create_ops_engine
    engine = create_ops_engine(data_env.ops_store_url)
    assert is_kill_switch_on(engine, env={})
    cli_main(["kill-switch", "off"])
    assert not is_kill_switch_on(engine, env={})


def test_executed_actions_asset_executes_against_the_billing_engine_and_reports_metadata(tmp_path):
    from recovery_pipeline.billing_engine.app import create_app

    billing_db = _billing_db(tmp_path, countries=("GB",))
    engine = ops_engine(tmp_path)
    add_inbox(engine, "slicker", "evt_1", slicker_event("evt_1", "recovery_action", "in_0",
                                                        "ACTION_SUGGESTION_RETRY", ideal=past()))
    with serve_in_thread(create_app(db_url=str(billing_db.url), api_key=KEY)) as url:
        result = dg.materialize([executed_actions], resources=_resources(tmp_path, billing_url=url))
    assert result.success
    meta = result.asset_materializations_for_node("executed_actions")[0].metadata
    assert meta["dagster/row_count"].value == 1
    assert meta["by_result"].value == {"executed": 1}
    preview = json.dumps(meta["preview"].value)
    assert "cus_0@example.com" not in preview


def test_polled_recovery_actions_asset_polls_the_sandbox_and_webhook_events_summarises_the_inbox(tmp_path):
    engine = ops_engine(tmp_path)
    add_inbox(engine, "revtain", "ev_1", {"type": "card.updated", "data": {"email": "jane@example.com"}})
    app = sandbox_app(SandboxConfig(api_key="k-test", deliver_in_background=False, requests_per_second=1000))
    with serve_in_thread(app) as url:
        import httpx
        httpx.post(f"{url}/v1/transactions", headers={"Authorization": "Bearer k-test"}, json={"transactions": [
            {"id": "tx_1", "paymentGatewayTransactionId": "gw_1", "state": "TRANSACTION_STATE_FAILED",
             "customerId": "cus_1", "invoiceId": "in_1", "amount": 500, "currency": "EUR",
             "createdAt": "2026-01-10T10:00:00Z", "paymentGatewayErrorCode": "insufficient_funds"}]})
        result = dg.materialize([webhook_events, polled_recovery_actions],
                                resources=_resources(tmp_path, poll_enabled=True, provider_url=url))
    assert result.success
    polled = result.asset_materializations_for_node("polled_recovery_actions")[0].metadata
    inbox = result.asset_materializations_for_node("webhook_events")[0].metadata
    assert (polled["new_actions"].value, polled["dagster/row_count"].value) == (1, 1)
    assert inbox["by_status"].value == {"pending": 1}


def test_polling_failure_fails_the_run_and_records_the_failure_for_alerting(tmp_path):
    resources = _resources(tmp_path, poll_enabled=True, provider_url="http://127.0.0.1:9")
    engine = ops_engine(tmp_path)
    result = dg.materialize([polled_recovery_actions], resources=resources, raise_on_error=False)
    assert not result.success
    with engine.connect() as c:
        assert c.execute(sa.select(poll_state.c.consecutive_failures)).scalar_one() == 1
        incident = c.execute(sa.select(alert_incidents.c.incident_key, alert_incidents.c.status)).one()
        assert tuple(incident) == ("polling_stopped:slicker_recovery_actions", "firing")
        assert c.execute(sa.select(sa.func.count()).select_from(audit)).scalar_one() == 0


def test_every_listed_recovery_action_is_stored_check_fails_when_paging_stopped_short(tmp_path):
    from recovery_pipeline.defs.provider_feedback.checks import every_listed_recovery_action_is_stored
    from recovery_pipeline.execution.polling import poll_recovery_actions

    resources = _resources(tmp_path)
    engine = ops_engine(tmp_path)
    item = {"requestId": "ra_1", "invoiceId": "in_1", "actionSuggestion": "ACTION_SUGGESTION_RETRY"}
    poll_recovery_actions(engine, lambda token: {"recoveryActions": [item], "nextPageToken": "",
                                                 "totalSize": 2})
    kwargs = {k: resources[k] for k in ("ops_store", "execution_settings")}
    short = every_listed_recovery_action_is_stored(**kwargs)
    assert not short.passed
    poll_recovery_actions(engine, lambda token: {"recoveryActions": [item, {**item, "requestId": "ra_2"}],
                                                 "nextPageToken": "", "totalSize": 2})
    assert every_listed_recovery_action_is_stored(**kwargs).passed


def test_execute_cli_reports_paused_while_the_kill_switch_is_on(data_env, capsys):
    assert cli_main(["kill-switch", "on"]) == 0
    capsys.readouterr()
    assert cli_main(["execute", "--no-poll"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["execution"]["paused"] is True


def test_code_location_registers_the_groups_sensor_and_schedule_running_by_default():
    from recovery_pipeline.definitions import defs

    repo = defs.get_repository_def()
    graph = repo.asset_graph
    groups = {k: graph.get(dg.AssetKey(k)).group_name
              for k in ("webhook_events", "polled_recovery_actions", "executed_actions")}
    assert groups == {"webhook_events": "provider_feedback", "polled_recovery_actions": "provider_feedback",
                      "executed_actions": "recovery_execution"}
    assert repo.get_sensor_def("execution_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert repo.get_schedule_def("recovery_actions_poll").default_status == dg.DefaultScheduleStatus.RUNNING
    checks = {k.name for k in graph.asset_check_keys}
    assert {"every_listed_recovery_action_is_stored", "manual_review_queue_is_empty"} <= checks
