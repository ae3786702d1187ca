"""Checks of the provider_sync group."""

import dagster as dg

from recovery_pipeline.defs.provider_sync.assets import FAILURE_HANDOFFS, PUSHED
from recovery_pipeline.resources import OpsStoreResource, ProviderResource


@dg.asset_check(asset=PUSHED["transactions"], name="no_push_is_waiting_in_dead_letters",
                description=("Every batch sent to the provider was acknowledged: no push dead letter "
                             "waits for `recovery-pipeline redrive`."))
def no_push_is_waiting_in_dead_letters(ops_store: OpsStoreResource,
                                       provider: ProviderResource) -> dg.AssetCheckResult:
    from recovery_pipeline.providers.health import open_dead_letters

    waiting = open_dead_letters(ops_store.engine(), provider.options().provider, "push")
    return dg.AssetCheckResult(passed=not waiting, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"dead_letters": sum(waiting.values()),
                                         "by_entity": dg.MetadataValue.json(waiting)})


@dg.asset_check(asset=FAILURE_HANDOFFS, name="every_hand_off_has_an_outcome",
                description=("No hand-off is left pending or failed: each was accepted, queued, "
                             "blocked or recognised as a duplicate by the provider."))
def every_hand_off_has_an_outcome(ops_store: OpsStoreResource,
                                  provider: ProviderResource) -> dg.AssetCheckResult:
    from recovery_pipeline.providers.health import open_dead_letters, stuck_handoffs

    opts = provider.options()
    stuck = stuck_handoffs(ops_store.engine(), opts.provider)
    dead = sum(open_dead_letters(ops_store.engine(), opts.provider, "handoff").values())
    return dg.AssetCheckResult(passed=stuck == 0, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"pending_or_failed": stuck, "dead_letters": dead})
