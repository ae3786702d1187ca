"""The failure hand-off sensor: new failed transactions in the canonical data -> a hand-off run."""


import hashlib
import json

import dagster as dg

from recovery_pipeline.defs.provider_sync.jobs import failure_handoff_job
from recovery_pipeline.resources import WarehouseResource

HANDOFF_OP = "provider_sync__failure_handoffs"
MAX_PER_RUN = 500


def evaluate_failed_transactions(fetch, cursor: str | None,
                                 max_rows: int = MAX_PER_RUN) -> dg.SensorResult:
    """The sensor body without a Dagster context. ``fetch(after_ts, after_id, max_rows)`` returns
    failed transactions (of open invoices) strictly after the watermark, oldest first."""
    from recovery_pipeline.providers.source import watermark

    mark = json.loads(cursor) if cursor else {}
    rows = fetch(mark.get("created_at"), mark.get("transaction_id"), max_rows)
    if not rows:
        return dg.SensorResult(skip_reason="no new failed transactions",
                               cursor=json.dumps(mark) if mark else None)
    ids = [str(r["transaction_id"]) for r in rows]
    run_key = "handoff-" + hashlib.sha256(",".join(ids).encode()).hexdigest()[:20]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=run_key,
            run_config=dg.RunConfig(ops={HANDOFF_OP: {"config": {"transaction_ids": ids}}}),
            tags={"failed_transactions": str(len(ids))})],
        cursor=json.dumps(watermark(rows[-1])))


@dg.sensor(
    name="failed_transactions_sensor",
    job=failure_handoff_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=("Notices new failed transactions in canonical.transactions (watermark on "
                 "created_at + transaction_id, not a rescan) and requests a hand-off run for them."),
)
def failed_transactions_sensor(context: dg.SensorEvaluationContext,
                               warehouse: WarehouseResource) -> dg.SensorResult:
    from recovery_pipeline.providers.source import new_failures_duckdb, new_failures_sql

    try:
        if warehouse.is_postgres:
            engine = warehouse.sqlalchemy_engine()
            return evaluate_failed_transactions(
                lambda ts, tid, n: new_failures_sql(engine, ts, tid, n), context.cursor)
        with warehouse.duckdb(read_only=True) as con:
            return evaluate_failed_transactions(
                lambda ts, tid, n: new_failures_duckdb(con, ts, tid, n), context.cursor)
    except Exception as exc:  # noqa: BLE001 - warehouse busy or not built yet: try next tick
        return dg.SensorResult(skip_reason=f"warehouse not readable yet: {type(exc).__name__}",
                               cursor=context.cursor)
