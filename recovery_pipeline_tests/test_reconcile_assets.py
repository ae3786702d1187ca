"""The reconciliation assets in Dagster: provider view fallback, ops snapshot, state mismatches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from recovery_pipeline.defs.monitoring.assets import pipeline_health
from recovery_pipeline.defs.monitoring.checks import pipeline_health_checks
from recovery_pipeline.defs.provider_feedback.provider_assets import provider_counts
from recovery_pipeline.defs.reconciliation.assets import ops_snapshot, state_mismatches
from recovery_pipeline.defs.reconciliation.checks import state_mismatch_checks
from recovery_pipeline.opsstore.models import dead_letters, executed_actions, push_ledger
from recovery_pipeline.reconciliation import synthetic
from recovery_pipeline.resources import (
    OpsStoreResource,
    PipelineSettingsResource,
    ReconciliationConfig,
    WarehouseResource,
)


@pytest.fixture
def resources(tmp_path, free_port):
    wh = tmp_path / "wh.duckdb"
    now = datetime.now(UTC)
    with duckdb.connect(str(wh)) as con:
        synthetic.generate(con, 120, months=2, start=now - timedelta(days=60), as_of=now - timedelta(days=1))
    return {
        "warehouse": WarehouseResource(target=str(wh)),
        "ops_store": OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}"),
        # nothing listens on free_port: the counts endpoint is unavailable
        "reconciliation": ReconciliationConfig(provider="slicker", dead_letter_threshold=2,
                                               provider_base_url=f"http://127.0.0.1:{free_port}"),
        "pipeline_settings": PipelineSettingsResource(
            data_dir=str(tmp_path), exports_dir=str(tmp_path / "x"),
            integration_file=str(tmp_path / "integration.yaml")),
    }


def test_provider_view_falls_back_to_the_push_ledger_without_a_counts_endpoint(resources):
    engine = resources["ops_store"].engine()
    now = datetime.now(UTC)
    with engine.begin() as c:
        for i, month in enumerate(["2026-01", "2026-01", "2026-02"]):
            c.execute(sa.insert(push_ledger).values(provider="slicker", entity="invoices",
                                                    record_id=f"in_{i}", payload_hash="h",
                                                    month=month, pushed_at=now))
    result = dg.materialize([provider_counts], resources=resources)
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["source"].value == "push_ledger"
    with duckdb.connect(resources["warehouse"].target) as con:
        rows = con.execute("select month, measure, value from provider.counts order by month").fetchall()
    assert rows == [("2026-01", "invoices", 2), ("2026-02", "invoices", 1)]


def test_state_mismatch_check_names_the_invoice_recovered_at_the_provider_but_open(resources):
    with duckdb.connect(resources["warehouse"].target) as con:
        open_inv = con.execute("select invoice_id from canonical.invoices where status = 'open' "
                               "order by invoice_id limit 1").fetchone()[0]
    now = datetime.now(UTC)
    with resources["ops_store"].engine().begin() as c:
        c.execute(sa.insert(executed_actions).values(
            source="webhook", source_event_id="evt_1", provider="revtain", invoice_id=open_inv,
            instruction="recovery.success", business_action="mark_paid", mode="live",
            received_at=now - timedelta(hours=2), executed_at=now - timedelta(hours=2),
            result="failed", attempts=1))
    result = dg.materialize([ops_snapshot, state_mismatches, state_mismatch_checks], resources=resources)
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    bad = evals["no_recovered_invoice_left_open"]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    assert open_inv in bad.metadata["summary"].value
    assert evals["executed_retries_produced_transactions"].passed


def test_pipeline_health_asset_flags_dead_letters_over_threshold(resources):
    now = datetime.now(UTC)
    with resources["ops_store"].engine().begin() as c:
        for i in range(2):
            c.execute(sa.insert(dead_letters).values(kind="event", provider="slicker", ref=f"e{i}",
                                                     attempts=5, created_at=now, status="dead"))
    result = dg.materialize([pipeline_health, pipeline_health_checks], resources=resources)
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals == {"webhook_success_rate_above_minimum": True,
                     "no_recovery_action_missed_after_ideal_retry_time": True,
                     "dead_letters_below_threshold": False}
