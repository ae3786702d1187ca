"""Jobs of the provider_sync group."""

import dagster as dg

from recovery_pipeline.defs.provider_sync.assets import FAILURE_HANDOFFS, PUSHED

provider_push_job = dg.define_asset_job(
    "provider_push",
    selection=dg.AssetSelection.assets(*PUSHED.values()),
    description="Push new/changed subscriptions, invoices and transactions to the provider.",
)

failure_handoff_job = dg.define_asset_job(
    "failure_handoff",
    selection=dg.AssetSelection.assets(FAILURE_HANDOFFS),
    description="Hand new failed charges to the provider (requested by failed_transactions_sensor).",
)
