"""Recovery execution: provider decisions turned into business actions, with the audit trail."""

import dagster as dg

from recovery_pipeline.defs.provider_feedback.assets import POLLED_RECOVERY_ACTIONS, WEBHOOK_EVENTS
from recovery_pipeline.resources import (
    BillingDatabaseResource,
    BillingEngineResource,
    ExecutionSettingsResource,
    OpsStoreResource,
)

EXECUTED_ACTIONS = dg.AssetKey("executed_actions")


@dg.asset(
    key=EXECUTED_ACTIONS,
    group_name="recovery_execution",
    kinds={"python", "sql"},
    deps=[WEBHOOK_EVENTS, POLLED_RECOVERY_ACTIONS],
    description=(
        "The audit trail of recovery decisions: one row per provider event or polled action with "
        "the business action taken in the billing system (retry now, request a payment-method "
        "update, pause collection, complete dunning, mark paid, forward a card-update link, route "
        "to review), the mode (shadow = recorded only, live = executed; a cohort rollout is live "
        "inside the cohort and shadow outside), invoice state before and after, result and "
        "attempts. Materializing it executes what is due (financial events first, oldest first); "
        "the kill switch pauses it and leaves everything pending."
    ),
)
def executed_actions(context: dg.AssetExecutionContext, ops_store: OpsStoreResource,
                     execution_settings: ExecutionSettingsResource,
                     billing_engine: BillingEngineResource,
                     billing_db: BillingDatabaseResource) -> dg.MaterializeResult:
    from recovery_pipeline.execution.executor import execute_pending
    from recovery_pipeline.execution.reports import audit_summary

    engine = ops_store.engine()
    policy = execution_settings.policy()
    with billing_engine.billing_system(context_engine=billing_db.engine()) as billing:
        report = execute_pending(engine, billing, policy)
    if report.paused:
        context.log.warning("kill switch is on: execution paused, events stay pending")
    context.log.info(f"execution ({policy.mode}): {report.as_metadata()}")
    summary = audit_summary(engine)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": summary["total"],
        "policy_mode": policy.mode,
        "this_run": dg.MetadataValue.json(report.as_metadata()),
        "by_action": dg.MetadataValue.json(summary["by_action"]),
        "by_mode": dg.MetadataValue.json(summary["by_mode"]),
        "by_result": dg.MetadataValue.json(summary["by_result"]),
        "open_manual_reviews": summary["open_manual_reviews"],
        "dead_lettered_events": summary["dead_lettered_events"],
        "preview": dg.MetadataValue.json(summary["preview"]),
    })
