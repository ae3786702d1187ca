"""Checks on the provider feedback path."""

import dagster as dg

from recovery_pipeline.defs.provider_feedback.assets import POLLED_RECOVERY_ACTIONS
from recovery_pipeline.resources import ExecutionSettingsResource, OpsStoreResource


@dg.asset_check(asset=POLLED_RECOVERY_ACTIONS, name="polling_is_fresh_and_succeeding",
                description="The last successful poll is recent and polling is not failing repeatedly.")
def polling_is_fresh_and_succeeding(ops_store: OpsStoreResource,
                                    execution_settings: ExecutionSettingsResource) -> dg.AssetCheckResult:
    from recovery_pipeline.execution.polling import polling_health

    if not execution_settings.polling_enabled():
        return dg.AssetCheckResult(passed=True, metadata={"polling_enabled": False})
    health = polling_health(ops_store.engine(), name=execution_settings.poll_name,
                            stale_after_minutes=execution_settings.poll_stale_minutes,
                            failure_threshold=execution_settings.poll_failure_threshold)
    return dg.AssetCheckResult(
        passed=health["healthy"], severity=dg.AssetCheckSeverity.ERROR,
        description=health["message"],
        metadata={k: health[k] for k in ("status", "minutes_since_success", "consecutive_failures")
                  if health[k] is not None})
