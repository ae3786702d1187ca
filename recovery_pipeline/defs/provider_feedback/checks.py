"""Checks on the provider feedback path."""

import json

import dagster as dg

from recovery_pipeline.defs.provider_feedback.assets import POLLED_RECOVERY_ACTIONS
from recovery_pipeline.resources import ExecutionSettingsResource, OpsStoreResource


@dg.asset_check(asset=POLLED_RECOVERY_ACTIONS, name="every_listed_recovery_action_is_stored",
                description=("The ops store holds at least as many recovery actions as the provider "
                             "listed (totalSize) at the last successful poll: paging reached the end."))
def every_listed_recovery_action_is_stored(ops_store: OpsStoreResource,
                                           execution_settings: ExecutionSettingsResource) -> dg.AssetCheckResult:
    import sqlalchemy as sa

    from recovery_pipeline.opsstore.models import poll_state, recovery_actions

    with ops_store.engine().connect() as conn:
        cursor = conn.execute(sa.select(poll_state.c.cursor).where(
            poll_state.c.name == execution_settings.poll_name)).scalar_one_or_none()
        stored = conn.execute(sa.select(sa.func.count()).select_from(recovery_actions).where(
            recovery_actions.c.provider == "slicker")).scalar_one()
    total = (json.loads(cursor) if cursor else {}).get("total_size")
    return dg.AssetCheckResult(
        passed=total is None or stored >= total, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"stored": stored, "provider_total_size": -1 if total is None else total})
