"""The daily reconciliation job: provider-side view, parity, mismatches, monitoring."""

import dagster as dg

daily_reconciliation_job = dg.define_asset_job(
    "daily_reconciliation",
    selection=(dg.AssetSelection.keys(["provider", "counts"])
               | dg.AssetSelection.groups("reconciliation", "monitoring")),
    description="Pull what the provider holds, compare it with billing month by month, list state "
                "mismatches and refresh monitoring (checks run with their assets).",
)
