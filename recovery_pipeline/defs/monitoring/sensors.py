"""Alerting: failed ERROR checks, freshness failures, failed runs, stopped polling, dead letters.

A failed asset check does not fail its run, so run-failure sensors alone would miss it: the
alerting sensor reads asset-check evaluations from the instance's event log (incrementally, by
storage id kept in its JSON cursor) and turns each alertable failure into an incident; a later
passing evaluation of the same check resolves it. Incidents live in the ops store
(``alert_incidents``), so each one is announced once and resolved once, whatever the tick rate.
"""

import json
import warnings

import dagster as dg

from recovery_pipeline.defs.monitoring.checks import canonical_freshness_checks
from recovery_pipeline.monitoring.alerts import AlertSink, Incidents
from recovery_pipeline.monitoring.health import ops_alert_conditions
from recovery_pipeline.resources import OpsStoreResource, ReconciliationConfig

EVENTS_PER_TICK = 5000


def _incidents(ops_store: OpsStoreResource) -> Incidents:
    return Incidents(ops_store.engine(), AlertSink.from_env())


def _alertable(evaluation) -> bool:
    return evaluation.severity == dg.AssetCheckSeverity.ERROR or "fresh" in evaluation.check_name


def _check_message(evaluation) -> str:
    summary = evaluation.metadata.get("summary")
    text = getattr(summary, "value", None) or evaluation.description or "check failed"
    return f"check `{evaluation.check_name}` on `{evaluation.asset_key.to_user_string()}`: {text}"


@dg.sensor(
    name="alerting_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Raises and resolves alert incidents: failed ERROR asset checks, failed freshness "
                "checks, stopped polling, dead letters piling up.",
)
def alerting_sensor(context: dg.SensorEvaluationContext, ops_store: OpsStoreResource,
                    reconciliation: ReconciliationConfig) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    after = cursor.get("after_storage_id")
    records = context.instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=after),
        limit=EVENTS_PER_TICK, ascending=True)
    latest: dict[str, object] = {}  # only the newest evaluation of each check counts
    for rec in records:
        evaluation = rec.event_log_entry.asset_check_evaluation
        if evaluation is not None and _alertable(evaluation):
            latest[f"check:{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"] = evaluation
        after = rec.storage_id
    incidents = _incidents(ops_store)
    fired, resolved = [], []
    for key, evaluation in sorted(latest.items()):
        if evaluation.passed:
            if incidents.resolve(key, f"check `{evaluation.check_name}` passes again"):
                resolved.append(key)
        else:
            severity = "ERROR" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "WARN"
            if incidents.fire(key, severity, _check_message(evaluation)):
                fired.append(key)
    bad = ops_alert_conditions(ops_store.engine(), reconciliation.reconciliation_settings())
    for prefix in ("polling_stopped:", "dead_letters_piling_up"):
        result = incidents.sync(prefix, {k: v for k, v in bad.items() if k.startswith(prefix)})
        fired += result["fired"]
        resolved += result["resolved"]
    if fired or resolved:
        context.log.info(f"alerts fired: {fired}; resolved: {resolved}")
    return dg.SensorResult(cursor=json.dumps({"after_storage_id": after}))


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One alert per failing job until a run of it succeeds again.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, ops_store: OpsStoreResource):
    run = context.dagster_run
    error = context.failure_event.message or "run failed"
    _incidents(ops_store).fire(f"run_failed:{run.job_name}", "ERROR",
                               f"run {run.run_id} of job `{run.job_name}` failed: {error[:500]}")


@dg.run_status_sensor(
    name="run_success_resolves_alert",
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Resolves a job's run-failure incident when a run of it succeeds.",
)
def run_success_resolves_alert(context: dg.RunStatusSensorContext, ops_store: OpsStoreResource):
    run = context.dagster_run
    _incidents(ops_store).resolve(f"run_failed:{run.job_name}", f"run {run.run_id} succeeded")


with warnings.catch_warnings():  # superseded upstream by FreshnessPolicy; see checks.py
    warnings.simplefilter("ignore")
    freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=list(canonical_freshness_checks),
        default_status=dg.DefaultSensorStatus.RUNNING,
        name="canonical_freshness_checks_sensor",
    )
