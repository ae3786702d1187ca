"""The incremental sync sensor asks for just the months that changed, with deterministic run keys."""

from __future__ import annotations

import json

import dagster as dg
import sqlalchemy as sa

from recovery_pipeline.billing_engine import schema
from recovery_pipeline.defs.billing_exports.sensors import (
    billing_changes_sensor,
    plan_export_runs,
    plan_sql_runs,
)
from recovery_pipeline.resources import BillingDatabaseResource, PipelineSettingsResource
from recovery_pipeline_tests.ingest_fixtures import World, ts

VALID = {"2025-02-01", "2025-03-01", "2025-04-01"}
FORMATS = ("parquet", "jsonl", "csv")


def test_new_export_file_requests_only_its_month(data_env):
    w = World()
    w.good_month("2025-02", 1)
    w.good_month("2025-03", 1)
    w.write_exports(data_env.exports_dir)
    first, cursor = plan_export_runs(str(data_env.exports_dir), {}, VALID, FORMATS)
    assert sorted(r.partition_key for r in first) == ["2025-02-01", "2025-03-01"]
    again, cursor = plan_export_runs(str(data_env.exports_dir), cursor, VALID, FORMATS)
    assert again == []
    late = World()
    late._n = 900
    late.good_month("2025-03", 1)
    late.write_exports(data_env.exports_dir, suffix="-late")
    third, _ = plan_export_runs(str(data_env.exports_dir), cursor, VALID, FORMATS)
    assert [r.partition_key for r in third] == ["2025-03-01"]
    replay, _ = plan_export_runs(str(data_env.exports_dir), cursor, VALID, FORMATS)
    assert [r.run_key for r in replay] == [r.run_key for r in third]  # deterministic


def test_months_outside_the_partitions_are_not_requested(data_env):
    w = World()
    w.good_month("2019-01", 1)
    w.write_exports(data_env.exports_dir)
    requests, cursor = plan_export_runs(str(data_env.exports_dir), {}, VALID, FORMATS)
    assert requests == [] and cursor["files"]


def test_sql_changes_request_the_changed_month_and_move_the_cursor(data_env):
    w = World()
    w.good_month("2025-02", 1)
    w.good_month("2025-03", 1)
    engine = w.write_sql(data_env.billing_db_url)
    first, cursor = plan_sql_runs(data_env.billing_db_url, {}, VALID)
    assert sorted(r.partition_key for r in first) == ["2025-02-01", "2025-03-01"]
    assert plan_sql_runs(data_env.billing_db_url, cursor, VALID)[0] == []
    with engine.begin() as conn:
        conn.execute(sa.update(schema.invoices)
                     .where(schema.invoices.c.invoice_id == w.rows["invoices"][0]["invoice_id"])
                     .values(status="void", updated_at=ts("2025-04", 3)))
    changed, _ = plan_sql_runs(data_env.billing_db_url, cursor, VALID)
    assert [r.partition_key for r in changed] == ["2025-02-01"]
    assert changed[0].run_key.startswith("sql:2025-02:")


def test_sensor_returns_a_sensor_result_with_a_json_cursor(data_env):
    w = World()
    w.good_month("2025-03", 1)
    w.write_exports(data_env.exports_dir)
    ctx = dg.build_sensor_context(resources={
        "billing_db": BillingDatabaseResource(url=data_env.billing_db_url),
        "pipeline_settings": PipelineSettingsResource(
            data_dir=str(data_env.data_dir), exports_dir=str(data_env.exports_dir),
            integration_file=str(data_env.integration_file)),
    })
    result = billing_changes_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    assert "invoices/2025-03.parquet" in json.loads(result.cursor)["files"]
