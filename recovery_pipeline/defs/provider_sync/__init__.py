"""Group ``provider_sync``: pushed subscriptions -> invoices -> transactions, and failure hand-offs
(sensor ``failed_transactions_sensor`` -> job ``failure_handoff``)."""

import dagster as dg

from recovery_pipeline.defs.provider_sync import assets, checks, jobs, sensors

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[jobs.provider_push_job, jobs.failure_handoff_job],
    sensors=[sensors.failed_transactions_sensor],
)
