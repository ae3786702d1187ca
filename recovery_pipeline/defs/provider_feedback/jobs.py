"""Jobs of the provider feedback group."""

import dagster as dg

from recovery_pipeline.defs.provider_feedback.assets import POLLED_RECOVERY_ACTIONS

poll_recovery_actions_job = dg.define_asset_job(
    "poll_recovery_actions",
    selection=dg.AssetSelection.assets(POLLED_RECOVERY_ACTIONS),
    description="List recovery actions from the provider (all pages) and store new ones once.",
)
