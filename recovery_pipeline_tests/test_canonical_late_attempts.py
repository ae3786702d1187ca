"""An attempt landing in month M+1 for an invoice of month M: a run over M+1 alone (what the change
sensor requests) also refreshes M's invoice_outcomes."""

from __future__ import annotations

import dagster as dg

from recovery_pipeline.commands.backfill import backfill_window
from recovery_pipeline.defs.billing_exports.sensors import plan_export_runs
from recovery_pipeline_tests.ingest_fixtures import World, load_and_model, query, ts

M, N = "2025-03", "2025-04"


def _outcomes(settings) -> dict:
    return {r[0]: r[1:] for r in query(
        settings, "select invoice_id, month, outcome, attempts, failed_attempts "
                  "from canonical.invoice_outcomes")}


def _history(w: World, m: str, n: str) -> tuple[dict, dict]:
    c = w.customer(m)
    s = w.subscription(m, c)
    refunded = w.invoice(m, s)
    w.transaction(m, refunded)
    retried = w.invoice(m, s, paid_at=ts(n, 2))
    w.transaction(m, retried, "failed", 1, day=28)
    return refunded, retried


def _late_attempts(w: World, n: str, refunded: dict, retried: dict) -> None:
    w.transaction(n, refunded, "refunded", 2, day=3)
    w.transaction(n, retried, "succeeded", 2, day=2)


def test_a_run_over_the_next_month_refreshes_the_earlier_months_outcomes(data_env):
    w = World()
    refunded, retried = _history(w, M, N)
    w.write_exports(data_env.exports_dir, months=[M])
    load_and_model(data_env, [M])
    assert _outcomes(data_env) == {refunded["invoice_id"]: (M, "first_attempt_success", 1, 0),
                                   retried["invoice_id"]: (M, "paid_after_failure", 1, 1)}

    _late_attempts(w, N, refunded, retried)
    w.write_exports(data_env.exports_dir, months=[N])
    load_and_model(data_env, [N])  # month N only
    assert _outcomes(data_env) == {refunded["invoice_id"]: (M, "refunded", 2, 0),
                                   retried["invoice_id"]: (M, "paid_after_failure", 2, 1)}


def test_the_sensor_run_for_the_next_month_refreshes_the_earlier_months_outcomes(data_env):
    from recovery_pipeline.definitions import build_definitions

    m, n = backfill_window(2)  # inside the monthly partitions
    w = World()
    refunded, retried = _history(w, m, n)
    w.write_exports(data_env.exports_dir, months=[m])
    job = build_definitions().resolve_job_def("billing_sync_job")
    valid = {f"{m}-01", f"{n}-01"}
    with dg.DagsterInstance.ephemeral() as instance:
        first, cursor = plan_export_runs(str(data_env.exports_dir), {}, valid, ("parquet",))
        assert [r.partition_key for r in first] == [f"{m}-01"]
        assert job.execute_in_process(partition_key=first[0].partition_key,
                                      instance=instance).success
        assert _outcomes(data_env)[refunded["invoice_id"]] == (m, "first_attempt_success", 1, 0)

        _late_attempts(w, n, refunded, retried)
        w.write_exports(data_env.exports_dir, months=[n])
        second, _ = plan_export_runs(str(data_env.exports_dir), cursor, valid, ("parquet",))
        assert [r.partition_key for r in second] == [f"{n}-01"]  # only the new month is requested
        result = job.execute_in_process(partition_key=second[0].partition_key, instance=instance)
        assert result.success
    assert _outcomes(data_env) == {refunded["invoice_id"]: (m, "refunded", 2, 0),
                                   retried["invoice_id"]: (m, "paid_after_failure", 2, 1)}
    mats = [e for e in result.get_asset_materialization_events()
            if e.asset_key == dg.AssetKey(["canonical", "invoice_outcomes"])]
    assert mats[0].materialization.metadata["dependent_months_refreshed"].value == {m: 2}
