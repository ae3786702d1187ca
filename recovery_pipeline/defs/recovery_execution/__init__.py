"""Group ``recovery_execution``: the audit trail of executed recovery decisions."""

import dagster as dg

from recovery_pipeline.defs.recovery_execution import assets, checks, jobs, sensors

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[jobs.execute_recovery_actions_job],
    sensors=[sensors.execution_sensor],
)
