"""Checks on the audit trail: nothing waits in manual review or in dead letters unnoticed."""

import dagster as dg

from recovery_pipeline.defs.recovery_execution.assets import EXECUTED_ACTIONS
from recovery_pipeline.resources import OpsStoreResource


@dg.asset_check(asset=EXECUTED_ACTIONS, name="manual_review_queue_is_empty",
                description="No provider instruction is waiting for a human (red flags routed to review).")
def manual_review_queue_is_empty(ops_store: OpsStoreResource) -> dg.AssetCheckResult:
    from recovery_pipeline.execution.reports import audit_summary

    n = audit_summary(ops_store.engine(), preview=0)["open_manual_reviews"]
    return dg.AssetCheckResult(passed=n == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"open_manual_reviews": n})


@dg.asset_check(asset=EXECUTED_ACTIONS, name="no_provider_event_is_dead_lettered",
                description="No provider event exhausted its retries (redrive after fixing the cause).")
def no_provider_event_is_dead_lettered(ops_store: OpsStoreResource) -> dg.AssetCheckResult:
    from recovery_pipeline.execution.reports import audit_summary

    n = audit_summary(ops_store.engine(), preview=0)["dead_lettered_events"]
    return dg.AssetCheckResult(passed=n == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"dead_lettered_events": n})
