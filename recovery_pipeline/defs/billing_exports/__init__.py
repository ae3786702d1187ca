"""Group ``billing_exports``: raw billing data loaded by dlt, monthly partitions, change sensor."""

import dagster as dg

from recovery_pipeline.defs.billing_exports.assets import billing_raw_load
from recovery_pipeline.defs.billing_exports.jobs import billing_sync_job
from recovery_pipeline.defs.billing_exports.sensors import billing_changes_sensor

defs = dg.Definitions(
    assets=[billing_raw_load],
    jobs=[billing_sync_job],
    sensors=[billing_changes_sensor],
)
