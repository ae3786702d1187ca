"""The monthly sync job: raw load + canonical models for one month partition."""


import dagster as dg

from recovery_pipeline.defs.billing_exports.partitions import monthly_partitions

billing_sync_job = dg.define_asset_job(
    "billing_sync_job",
    selection=dg.AssetSelection.groups("billing_exports", "canonical"),
    partitions_def=monthly_partitions,
    description="Load one month of billing data (dlt) and rebuild that month's canonical tables.",
)
