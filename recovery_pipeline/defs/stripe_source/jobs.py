"""Apply pending Stripe events to the object store."""

import dagster as dg

from recovery_pipeline.defs.stripe_source.assets import STRIPE_EVENT_STORE

stripe_event_store_job = dg.define_asset_job(
    "stripe_event_store_job", selection=dg.AssetSelection.assets(STRIPE_EVENT_STORE),
    description="Apply the Stripe events the receiver stored to the Stripe object store.")
