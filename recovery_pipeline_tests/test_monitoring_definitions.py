"""The reconciliation and monitoring domains load, and what the demo relies on starts RUNNING."""

from __future__ import annotations

import dagster as dg

from recovery_pipeline.defs import monitoring, reconciliation
from recovery_pipeline.defs.provider_feedback.provider_assets import provider_counts
from recovery_pipeline.resources import build_resources
from recovery_pipeline.settings import load_settings


def _defs(tmp_path):
    settings = load_settings({"RECOVERY_DATA_DIR": str(tmp_path)})
    return dg.Definitions.merge(reconciliation.defs, monitoring.defs,
                                dg.Definitions(assets=[provider_counts],
                                               resources=build_resources(settings)))


def test_alerting_freshness_and_daily_reconciliation_start_running(tmp_path):
    repo = _defs(tmp_path).get_repository_def()
    sensors = {s.name: s.default_status for s in repo.sensor_defs}
    for name in ("alerting_sensor", "canonical_freshness_checks_sensor", "run_failure_alert",
                 "run_success_resolves_alert"):
        assert sensors[name] == dg.DefaultSensorStatus.RUNNING
    schedules = {s.name: s for s in repo.schedule_defs}
    assert schedules["daily_reconciliation_schedule"].default_status == dg.DefaultScheduleStatus.RUNNING


def test_daily_job_covers_provider_counts_parity_mismatches_and_monitoring(tmp_path):
    job = _defs(tmp_path).resolve_job_def("daily_reconciliation")
    keys = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {"provider/counts", "reconciliation/monthly_parity", "reconciliation/state_mismatches",
            "monitoring/recovery_kpis", "monitoring/source_freshness"} <= keys


def test_parity_checks_are_named_as_predicates_with_blocking_errors(tmp_path):
    repo = _defs(tmp_path).get_repository_def()
    specs = {k.name: d.get_spec_for_check_key(k) for k, d in repo.asset_checks_defs_by_key.items()
             if k.asset_key == dg.AssetKey(["reconciliation", "monthly_parity"])}
    assert {"invoice_counts_match_provider", "currencies_match_provider",
            "recovery_outcomes_match_provider", "countries_covered_at_provider"} <= set(specs)
    assert specs["invoice_counts_match_provider"].blocking
    assert not specs["countries_covered_at_provider"].blocking


def test_every_asset_has_a_description_group_and_kinds(tmp_path):
    defs = _defs(tmp_path)
    specs = [s for a in defs.assets for s in a.specs]
    assert len(specs) == 9  # 3 ops snapshots, parity, mismatches, 3 monitoring, provider counts
    for spec in specs:
        assert spec.description, spec.key
        assert spec.group_name in ("reconciliation", "monitoring", "provider_feedback"), spec.key
        assert spec.kinds, spec.key
