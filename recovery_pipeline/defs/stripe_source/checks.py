"""Checks on the Stripe event store."""

import dagster as dg

from recovery_pipeline.defs.stripe_source.assets import STRIPE_EVENT_STORE
from recovery_pipeline.resources import OpsStoreResource


@dg.asset_check(asset=STRIPE_EVENT_STORE, name="stripe_events_are_all_mappable",
                description="No stored Stripe event is malformed (status 'failed' in the inbox).")
def stripe_events_are_all_mappable(ops_store: OpsStoreResource) -> dg.AssetCheckResult:
    import sqlalchemy as sa

    from recovery_pipeline.opsstore.models import webhook_inbox

    t = webhook_inbox.c
    with ops_store.engine().connect() as conn:
        bad = conn.execute(sa.select(t.event_id, t.last_error)
                           .where(t.provider == "stripe", t.status == "failed").limit(20)).all()
        n = conn.execute(sa.select(sa.func.count()).select_from(webhook_inbox)
                         .where(t.provider == "stripe", t.status == "failed")).scalar_one()
    return dg.AssetCheckResult(
        passed=n == 0, severity=dg.AssetCheckSeverity.WARN,
        metadata={"malformed_events": dg.MetadataValue.int(int(n)),
                  "examples": dg.MetadataValue.json({e: (r or "")[:200] for e, r in bad})})
