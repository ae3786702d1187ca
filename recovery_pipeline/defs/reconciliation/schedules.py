"""Daily reconciliation, RUNNING by default."""

import dagster as dg

from recovery_pipeline.defs.reconciliation.jobs import daily_reconciliation_job

daily_reconciliation_schedule = dg.ScheduleDefinition(
    name="daily_reconciliation_schedule",
    job=daily_reconciliation_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 06:00 UTC: provider counts, monthly parity, state mismatches, monitoring.",
)
