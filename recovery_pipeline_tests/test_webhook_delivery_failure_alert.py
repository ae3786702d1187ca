"""Launch scenario "Webhook delivery failure": our receiver answers non-2xx (a rotated token), the
provider sandbox retries delivery, the webhook success-rate check fails and exactly one alert
reaches the Slack stand-in; once the receiver is fixed the retried event lands and the alert resolves."""

from __future__ import annotations

import dagster as dg
import httpx
import sqlalchemy as sa

from recovery_pipeline.defs.monitoring.assets import pipeline_health
from recovery_pipeline.defs.monitoring.checks import pipeline_health_checks
from recovery_pipeline.defs.monitoring.sensors import alerting_sensor
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.opsstore.models import webhook_inbox, webhook_rejections
from recovery_pipeline.resources import OpsStoreResource, ReconciliationConfig, WarehouseResource
from recovery_pipeline.webhooks.app import ReceiverConfig, create_app
from recovery_pipeline_tests._recon_helpers import slack_capture
from recovery_pipeline_tests.provider_fixtures import start_sandbox

PROVIDER_TOKEN = "slicker-token-the-provider-sends"


def test_failed_webhook_delivery_is_retried_alerts_once_and_resolves(tmp_path, monkeypatch):
    ops_url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    resources = {
        "warehouse": WarehouseResource(target=str(tmp_path / "warehouse.duckdb")),
        "ops_store": OpsStoreResource(url=ops_url),
        "reconciliation": ReconciliationConfig(provider="slicker", webhook_success_min_rate=0.95),
    }
    instance = dg.DagsterInstance.ephemeral()
    cursor = [None]

    def measure_and_tick():
        result = dg.materialize([pipeline_health, pipeline_health_checks], resources=resources,
                                instance=instance, raise_on_error=False)
        verdict = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        defs = dg.Definitions(assets=[pipeline_health], asset_checks=[pipeline_health_checks],
                              resources=resources)
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor[0], definitions=defs,
                                      resources={k: resources[k] for k in ("ops_store", "reconciliation")})
        cursor[0] = alerting_sensor(ctx).cursor
        return verdict["webhook_success_rate_above_minimum"]

    wrong = create_app(ReceiverConfig(ops_store_url=ops_url, secrets={"slicker": "a-rotated-token"}))
    right = create_app(ReceiverConfig(ops_store_url=ops_url, secrets={"slicker": PROVIDER_TOKEN}))
    with slack_capture() as slack, serve_in_thread(wrong) as bad_receiver, \
            serve_in_thread(right) as good_receiver, \
            start_sandbox(webhook_url=bad_receiver, webhook_secrets={"slicker": PROVIDER_TOKEN},
                          time_scale=0.05) as sandbox:  # Slicker backoff 0, 0.05, 0.1 .. 25.6 s
        monkeypatch.setenv("ALERT_SLACK_WEBHOOK_URL", slack.url)
        http = httpx.Client(base_url=sandbox, timeout=10)
        first = http.post("/sandbox/events", json={"provider": "slicker", "type": "pause_collection",
                                                   "data": {"invoiceId": "inv_1"}}).json()["id"]
        for _ in range(2):  # the provider's first delivery and its retry both get 401
            http.post("/sandbox/deliver", json={})
        ops = sa.create_engine(ops_url)
        with ops.connect() as c:
            assert c.execute(sa.select(sa.func.count()).select_from(webhook_rejections)).scalar_one() >= 2
            assert c.execute(sa.select(sa.func.count()).select_from(webhook_inbox)).scalar_one() == 0

        assert measure_and_tick() is False
        assert measure_and_tick() is False
        alerts = slack.alerts()
        assert len(alerts) == 1 and "webhook_success_rate_above_minimum" in alerts[0]

        # the fix: the receiver gets the right token; the provider's next retry lands
        http.post("/sandbox/config", json={"webhook_url": good_receiver})
        with ops.connect() as c:
            rejected = c.execute(sa.select(sa.func.count()).select_from(webhook_rejections)).scalar_one()
        # normal traffic resumes: enough deliveries to lift the success rate back over 0.95
        for n in range(rejected * 20):
            http.post("/sandbox/events", json={"provider": "slicker", "type": "complete_dunning",
                                               "data": {"invoiceId": f"inv_ok_{n}"}})
        http.post("/sandbox/deliver", json={})
        outbox = {e["event_id"]: e for e in http.get("/sandbox/outbox").json()}
        assert outbox[first]["attempts"] >= 3  # retried until delivered
        with ops.connect() as c:
            assert c.execute(sa.select(webhook_inbox.c.event_id)
                             .where(webhook_inbox.c.event_id == first)).scalar_one() == first

        assert measure_and_tick() is True
        measure_and_tick()
        assert len(slack.alerts()) == 1
        resolutions = slack.resolutions()
        assert len(resolutions) == 1 and "webhook_success_rate_above_minimum" in resolutions[0]
        ops.dispose()
