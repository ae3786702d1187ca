"""Starts the Stripe event store job when the receiver has stored new Stripe events."""

import json

import dagster as dg

from recovery_pipeline.defs.stripe_source.jobs import stripe_event_store_job
from recovery_pipeline.resources import OpsStoreResource


@dg.sensor(
    name="stripe_inbox_sensor",
    job=stripe_event_store_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: are there pending Stripe events in the webhook inbox? Then apply them.",
)
def stripe_inbox_sensor(context: dg.SensorEvaluationContext, ops_store: OpsStoreResource) -> dg.SensorResult:
    import sqlalchemy as sa

    from recovery_pipeline.opsstore.models import webhook_inbox

    t = webhook_inbox.c
    with ops_store.engine().connect() as conn:
        n, max_id = conn.execute(sa.select(sa.func.count(), sa.func.max(t.id))
                                 .where(t.provider == "stripe", t.status == "pending")).one()
    previous = json.loads(context.cursor) if context.cursor else {}
    if not n:
        return dg.SensorResult(skip_reason="no pending Stripe events",
                               cursor=json.dumps({"last_max_id": previous.get("last_max_id")}))
    if previous.get("last_max_id") == max_id:
        return dg.SensorResult(skip_reason=f"{n} pending Stripe event(s) already requested (up to inbox id {max_id})",
                               cursor=json.dumps(previous))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"stripe-inbox-{max_id}",
                                    tags={"stripe_pending_events": str(n)})],
        cursor=json.dumps({"last_max_id": max_id}))
