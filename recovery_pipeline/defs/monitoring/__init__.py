"""Monitoring: freshness, pipeline health, recovery KPIs and the alerting sensors."""

import dagster as dg

from recovery_pipeline.defs.monitoring.assets import pipeline_health, recovery_kpis, source_freshness
from recovery_pipeline.defs.monitoring.checks import (
    canonical_freshness_checks,
    pipeline_health_checks,
    source_freshness_checks,
)
from recovery_pipeline.defs.monitoring.sensors import (
    alerting_sensor,
    freshness_checks_sensor,
    run_failure_alert,
    run_success_resolves_alert,
)

defs = dg.Definitions(
    assets=[source_freshness, pipeline_health, recovery_kpis],
    asset_checks=[source_freshness_checks, pipeline_health_checks, *canonical_freshness_checks],
    sensors=[alerting_sensor, run_failure_alert, run_success_resolves_alert, freshness_checks_sensor],
)
