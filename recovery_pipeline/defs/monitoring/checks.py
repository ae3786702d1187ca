"""Monitoring checks: source freshness (data and materialization) and pipeline health."""


import os
import warnings
from datetime import timedelta

import dagster as dg

from recovery_pipeline.reconciliation.warehouse_con import connect
from recovery_pipeline.resources import ReconciliationConfig, WarehouseResource

FRESHNESS_KEY = dg.AssetKey(["monitoring", "source_freshness"])
HEALTH_KEY = dg.AssetKey(["monitoring", "pipeline_health"])
CANONICAL_SOURCES = ("subscriptions", "invoices", "transactions")


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(f"{entity}_are_fresh", asset=FRESHNESS_KEY,
                             description=f"The newest canonical {entity} row (source updated_at) is "
                                         "within the allowed lag.")
           for entity in CANONICAL_SOURCES],
    can_subset=True,
)
def source_freshness_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                            reconciliation: ReconciliationConfig):
    """Data freshness: compares each source's newest timestamp with ``max_source_lag_hours``."""
    max_lag = reconciliation.reconciliation_settings().max_source_lag_hours
    selected = {k.name for k in context.selected_asset_check_keys}
    with connect(warehouse.target, read_only=True) as con:
        rows = {r[0]: r[1:] for r in con.execute(
            "select entity, newest_updated_at, row_count, lag_hours from monitoring.source_freshness").fetchall()}
    for entity in CANONICAL_SOURCES:
        name = f"{entity}_are_fresh"
        if name not in selected:
            continue
        newest, count, lag = rows.get(entity, (None, 0, None))
        passed = lag is not None and lag <= max_lag
        summary = (f"no {entity} at all" if newest is None else
                   f"newest {entity} updated_at {newest.isoformat()} is {lag:.1f} h old "
                   f"(allowed {max_lag:g} h)")
        yield dg.AssetCheckResult(
            check_name=name, asset_key=FRESHNESS_KEY, passed=passed,
            severity=dg.AssetCheckSeverity.WARN, description=summary,
            metadata={"summary": summary, "lag_hours": float(lag) if lag is not None else -1.0,
                      "allowed_lag_hours": float(max_lag), "rows": int(count or 0)})


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("webhook_success_rate_above_minimum", asset=HEALTH_KEY,
                          description="Accepted / (accepted + rejected) webhook deliveries is at "
                                      "least the configured minimum."),
        dg.AssetCheckSpec("no_recovery_action_missed_after_ideal_retry_time", asset=HEALTH_KEY,
                          description="No pending recovery action is past its ideal retry time."),
        dg.AssetCheckSpec("dead_letters_below_threshold", asset=HEALTH_KEY,
                          description="Dead letters stay below the configured threshold."),
    ],
    can_subset=True,
)
def pipeline_health_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                           reconciliation: ReconciliationConfig):
    """Thresholds on the latest pipeline-health measurement."""
    cfg = reconciliation.reconciliation_settings()
    selected = {k.name for k in context.selected_asset_check_keys}
    with connect(warehouse.target, read_only=True) as con:
        metrics = dict(con.execute(
            "select metric, value from monitoring.pipeline_health where measured_at = "
            "(select max(measured_at) from monitoring.pipeline_health)").fetchall())
    rate = metrics.get("webhook_success_rate")
    missed = int(metrics.get("actions_missed_after_ideal_time") or 0)
    dead = int(metrics.get("dead_letters") or 0)
    verdicts = {
        "webhook_success_rate_above_minimum": (
            rate is None or rate >= cfg.webhook_success_min_rate,
            "no webhook traffic in the window" if rate is None else
            f"success rate {rate:.3f} (minimum {cfg.webhook_success_min_rate:g}; "
            f"{int(metrics.get('webhooks_rejected') or 0)} rejected)"),
        "no_recovery_action_missed_after_ideal_retry_time": (
            missed == 0, f"{missed} pending action(s) past their ideal retry time"),
        "dead_letters_below_threshold": (
            dead < cfg.dead_letter_threshold, f"{dead} dead letters (threshold {cfg.dead_letter_threshold})"),
    }
    for name, (passed, summary) in verdicts.items():
        if name in selected:
            # repeated non-2xx answers to the provider's webhooks page the on-call (ERROR)
            severity = (dg.AssetCheckSeverity.ERROR if name == "webhook_success_rate_above_minimum"
                        else dg.AssetCheckSeverity.WARN)
            yield dg.AssetCheckResult(check_name=name, asset_key=HEALTH_KEY, passed=passed,
                                      severity=severity, description=summary,
                                      metadata={"summary": summary})


def _freshness_hours() -> float:
    return float(os.environ.get("RECOVERY_FRESHNESS_HOURS", "26"))


# Materialization freshness of the canonical tables (Dagster freshness checks + their sensor).
# (superseded upstream by FreshnessPolicy on the asset; these checks are what the alerting sensor
# can read as check evaluations, and the canonical assets belong to another domain)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    canonical_freshness_checks = dg.build_last_update_freshness_checks(
        assets=[dg.AssetKey(["canonical", e]) for e in CANONICAL_SOURCES],
        lower_bound_delta=timedelta(hours=_freshness_hours()),
    )
