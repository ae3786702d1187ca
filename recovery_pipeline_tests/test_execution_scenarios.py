"""Launch-test scenarios (the seed's "Test Before Launch" table), each end to end over loopback HTTP:
provider sandbox -> webhook receiver -> ops store inbox -> executor -> demo billing engine."""

from __future__ import annotations

import pytest

from recovery_pipeline.billing_engine import db as bdb
from recovery_pipeline.billing_engine.app import create_app as billing_app
from recovery_pipeline.execution.scenarios import SCENARIOS, ScenarioEnv, run_scenarios
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.provider_sandbox.app import SandboxConfig, create_app as sandbox_app
from recovery_pipeline.webhooks.app import ReceiverConfig, create_app as receiver_app


@pytest.fixture(scope="module")
def scenario_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("scenarios")
    ops_url, billing_db_url = f"sqlite:///{d / 'ops.sqlite'}", f"sqlite:///{d / 'billing.sqlite'}"
    init_ops_store(create_ops_engine(ops_url))
    bdb.init_billing_db(bdb.create_billing_engine(billing_db_url))
    with serve_in_thread(receiver_app(ReceiverConfig(ops_store_url=ops_url, secrets={"slicker": "hook-tok"}))) as rcv, \
            serve_in_thread(billing_app(db_url=billing_db_url, api_key="bill-key")) as bill, \
            serve_in_thread(sandbox_app(SandboxConfig(
                api_key="prov-key", webhook_url=rcv, webhook_secrets={"slicker": "hook-tok"},
                deliver_in_background=False, requests_per_second=50, time_scale=0.0))) as prov:
        yield ScenarioEnv(provider_url=prov, provider_api_key="prov-key", receiver_url=rcv,
                          slicker_webhook_token="hook-tok", billing_url=bill, billing_api_key="bill-key",
                          billing_db_url=billing_db_url, ops_store_url=ops_url)


@pytest.mark.parametrize("name", [name for name, _v, _f in SCENARIOS])
def test_launch_scenario_passes_end_to_end(scenario_env, name):
    [result] = run_scenarios(scenario_env, only=[name])
    assert result.scenario == name
    assert result.passed, result.detail
