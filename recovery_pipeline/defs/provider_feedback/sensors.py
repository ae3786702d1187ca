"""Watches the polling path: raises an incident when polling stops or keeps failing."""

import json

import dagster as dg

from recovery_pipeline.resources import ExecutionSettingsResource, OpsStoreResource


@dg.sensor(
    name="polling_health_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=("Every minute: is the last successful poll recent, are polls failing in a row? "
                 "Keeps the 'polling:<name>' incident firing in the ops store while unhealthy."),
)
def polling_health_sensor(context: dg.SensorEvaluationContext, ops_store: OpsStoreResource,
                          execution_settings: ExecutionSettingsResource) -> dg.SensorResult:
    from recovery_pipeline.execution.polling import polling_health, record_polling_alert

    if not execution_settings.polling_enabled():
        return dg.SensorResult(skip_reason="polling is off for this integration",
                               cursor=json.dumps({"status": "disabled"}))
    engine = ops_store.engine()
    health = polling_health(engine, name=execution_settings.poll_name,
                            stale_after_minutes=execution_settings.poll_stale_minutes,
                            failure_threshold=execution_settings.poll_failure_threshold)
    # "never" right after setup is not an incident yet: the first scheduled poll has not run.
    previous = json.loads(context.cursor) if context.cursor else {}
    if health["status"] == "never" and previous.get("status") in (None, "disabled"):
        outcome = "waiting_for_first_poll"
    else:
        outcome = record_polling_alert(engine, health)
    if not health["healthy"]:
        context.log.warning(f"polling unhealthy: {health['message']} (incident {outcome})")
    return dg.SensorResult(skip_reason=f"{health['message']} (incident: {outcome})",
                           cursor=json.dumps({"status": health["status"], "incident": outcome}))
