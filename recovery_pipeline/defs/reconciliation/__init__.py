"""Reconciliation: billing vs provider, month by month, and invoices whose states disagree."""

import dagster as dg

from recovery_pipeline.defs.reconciliation.assets import monthly_parity, ops_snapshot, state_mismatches
from recovery_pipeline.defs.reconciliation.checks import monthly_parity_checks, state_mismatch_checks
from recovery_pipeline.defs.reconciliation.jobs import daily_reconciliation_job
from recovery_pipeline.defs.reconciliation.schedules import daily_reconciliation_schedule

defs = dg.Definitions(
    assets=[ops_snapshot, monthly_parity, state_mismatches],
    asset_checks=[monthly_parity_checks, state_mismatch_checks],
    jobs=[daily_reconciliation_job],
    schedules=[daily_reconciliation_schedule],
)
