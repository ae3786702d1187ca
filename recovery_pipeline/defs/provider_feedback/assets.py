"""Provider feedback: what the provider told us, by webhook (inbox) and by polling."""

import dagster as dg

from recovery_pipeline.resources import ExecutionSettingsResource, OpsStoreResource

WEBHOOK_EVENTS = dg.AssetKey("webhook_events")
POLLED_RECOVERY_ACTIONS = dg.AssetKey("polled_recovery_actions")


@dg.asset(
    key=WEBHOOK_EVENTS,
    group_name="provider_feedback",
    kinds={"python", "sql"},
    description=(
        "Every webhook the provider sent us, stored raw and verified by the receiver before it was "
        "acknowledged (the ops-store inbox): counts by provider, event type and processing status "
        "(pending, processed, skipped, failed, dead), and the latest events. The raw payloads stay "
        "in the inbox for audit and replay."
    ),
)
def webhook_events(context: dg.AssetExecutionContext, ops_store: OpsStoreResource) -> dg.MaterializeResult:
    from recovery_pipeline.execution.reports import inbox_summary

    summary = inbox_summary(ops_store.engine())
    context.log.info(f"webhook inbox: {summary['total']} events, by status {summary['by_status']}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": summary["total"],
        "by_status": dg.MetadataValue.json(summary["by_status"]),
        "by_provider_type_status": dg.MetadataValue.json(summary["groups"]),
        "preview": dg.MetadataValue.json(summary["preview"]),
    })


@dg.asset(
    key=POLLED_RECOVERY_ACTIONS,
    group_name="provider_feedback",
    kinds={"python", "sql"},
    description=(
        "Recovery actions listed from the provider by polling (Slicker GET /v1/recovery_actions, "
        "every page), each stored once by its action id, with the last successful poll time and "
        "consecutive failures kept for alerting. A no-op when the integration does not poll."
    ),
)
def polled_recovery_actions(context: dg.AssetExecutionContext, ops_store: OpsStoreResource,
                            execution_settings: ExecutionSettingsResource) -> dg.MaterializeResult:
    from recovery_pipeline.execution.polling import (
        PollError,
        poll_recovery_actions,
        polling_health,
        record_polling_alert,
    )
    from recovery_pipeline.execution.reports import polled_summary

    engine = ops_store.engine()
    poll_meta: dict = {"polling_enabled": execution_settings.polling_enabled()}
    if poll_meta["polling_enabled"]:
        fetch = execution_settings.page_fetcher()
        try:
            result = poll_recovery_actions(engine, fetch, name=execution_settings.poll_name)
        except PollError as exc:
            health = polling_health(engine, name=execution_settings.poll_name,
                                    stale_after_minutes=execution_settings.poll_stale_minutes,
                                    failure_threshold=execution_settings.poll_failure_threshold)
            if not health["healthy"]:
                record_polling_alert(engine, health)
            raise dg.Failure(description=f"polling the provider failed: {exc}",
                             metadata={"consecutive_failures": health["consecutive_failures"]}) from exc
        finally:
            fetch.close()
        poll_meta.update(result.as_metadata())
        context.log.info(f"polled {result.pages} page(s): {result.new} new, {result.duplicates} known")
    summary = polled_summary(engine)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": summary["total"],
        **{k: v for k, v in poll_meta.items() if v is not None},
        "by_status": dg.MetadataValue.json(summary["by_status"]),
        "by_suggestion_status": dg.MetadataValue.json(summary["groups"]),
        "preview": dg.MetadataValue.json(summary["preview"]),
    })
