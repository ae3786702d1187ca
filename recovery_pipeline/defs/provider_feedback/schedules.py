"""The polling path's schedule (skips itself when the integration does not poll)."""

import dagster as dg

from recovery_pipeline.defs.provider_feedback.jobs import poll_recovery_actions_job
from recovery_pipeline.resources import ExecutionSettingsResource


@dg.schedule(
    name="recovery_actions_poll",
    cron_schedule="* * * * *",
    job=poll_recovery_actions_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Poll the provider's recovery actions every minute, ahead of the ideal retry windows.",
)
def recovery_actions_poll(context: dg.ScheduleEvaluationContext,
                          execution_settings: ExecutionSettingsResource):
    if not execution_settings.polling_enabled():
        return dg.SkipReason("polling is off for this integration (recovery_execution: webhook)")
    return dg.RunRequest(run_key=f"poll-{context.scheduled_execution_time.isoformat()}")
