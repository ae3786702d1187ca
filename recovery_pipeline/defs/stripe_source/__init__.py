"""Stripe as the billing source: the Stripe event store (asset), its check, the inbox sensor."""

import dagster as dg

from recovery_pipeline.defs.stripe_source import assets, checks, jobs, sensors

defs = dg.Definitions(
    assets=[assets.stripe_event_store],
    asset_checks=[checks.stripe_events_are_all_mappable],
    jobs=[jobs.stripe_event_store_job],
    sensors=[sensors.stripe_inbox_sensor],
)
