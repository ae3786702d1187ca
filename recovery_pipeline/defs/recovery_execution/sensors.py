"""The execution sensor: requests an execution run when provider decisions are due."""

import json
from datetime import UTC, datetime

import dagster as dg

from recovery_pipeline.defs.recovery_execution.jobs import execute_recovery_actions_job
from recovery_pipeline.resources import ExecutionSettingsResource, OpsStoreResource

# A due set that does not move for this long gets a fresh run key (a run that died without
# touching anything must not block execution forever).
STUCK_AFTER_SECONDS = 600


def evaluate_execution(engine, policy, cursor: str | None, now: datetime | None = None,
                       env=None) -> dg.SensorResult:
    """The sensor body, callable without a Dagster context (tests, CLI)."""
    from recovery_pipeline.execution.executor import pending_summary
    from recovery_pipeline.execution.killswitch import kill_switch_state

    now = now or datetime.now(UTC)
    previous = json.loads(cursor) if cursor else {}
    state = kill_switch_state(engine, env)
    if state.on:
        return dg.SensorResult(skip_reason=state.describe(),
                               cursor=json.dumps({**previous, "kill_switch": True}))
    summary = pending_summary(engine, policy, now)
    if not summary["due"]:
        return dg.SensorResult(
            skip_reason=(f"nothing due ({summary['waiting']} waiting for an ideal retry time "
                         "or a retry backoff)"),
            cursor=json.dumps({"digest": None, "since": None, "waiting": summary["waiting"]}))
    digest = summary["digest"]
    since = previous.get("since") if previous.get("digest") == digest else now.timestamp()
    generation = int((now.timestamp() - since) // STUCK_AFTER_SECONDS)
    run_key = f"exec-{digest}" + (f"-g{generation}" if generation else "")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=run_key, tags={"due": str(summary["due"])})],
        cursor=json.dumps({"digest": digest, "since": since, "waiting": summary["waiting"],
                           "run_key": run_key}))


@dg.sensor(
    name="execution_sensor",
    job=execute_recovery_actions_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=("Watches the webhook inbox and the polled actions; when decisions are due it "
                 "requests an execution run (one run key per due set). Skips while the kill "
                 "switch is on: events stay pending, ingestion continues."),
)
def execution_sensor(context: dg.SensorEvaluationContext, ops_store: OpsStoreResource,
                     execution_settings: ExecutionSettingsResource) -> dg.SensorResult:
    return evaluate_execution(ops_store.engine(), execution_settings.policy(), context.cursor)
