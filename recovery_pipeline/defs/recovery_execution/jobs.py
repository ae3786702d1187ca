"""Jobs of the recovery execution group."""

import dagster as dg

from recovery_pipeline.defs.recovery_execution.assets import EXECUTED_ACTIONS

execute_recovery_actions_job = dg.define_asset_job(
    "execute_recovery_actions",
    selection=dg.AssetSelection.assets(EXECUTED_ACTIONS),
    description="Execute due provider decisions in the billing system and extend the audit trail.",
)
