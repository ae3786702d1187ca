"""Alerting: failed ERROR checks, freshness failures, failed runs, stopped polling, dead letters.

A failed asset check does not fail its run, so run-failure sensors alone would miss it: the
alerting sensor reads the latest evaluation of every asset check of the code location
(``instance.get_latest_asset_check_evaluation_record``; the JSON cursor remembers which
evaluation it last handled per check) and turns each alertable failure (severity ERROR, or a
freshness check) into an incident; a later passing evaluation of the same check resolves it. Incidents live in the ops store
(``alert_incidents``), so each one is announced once and resolved once, whatever the tick rate.
"""

import json
import warnings

import dagster as dg

from recovery_pipeline.defs.monitoring.checks import canonical_freshness_checks
from recovery_pipeline.monitoring.alerts import AlertSink, Incidents
from recovery_pipeline.monitoring.health import ops_alert_conditions
from recovery_pipeline.resources import OpsStoreResource, ReconciliationConfig

def _incidents(ops_store: OpsStoreResource) -> Incidents:
    return Incidents(ops_store.engine(), AlertSink.from_env())


def _alertable(evaluation) -> bool:
    return evaluation.severity == dg.AssetCheckSeverity.ERROR or "fresh" in evaluation.check_name


def _check_message(evaluation) -> str:
    summary = evaluation.metadata.get("summary")
    text = getattr(summary, "value", None) or evaluation.description or "check failed"
    return f"check `{evaluation.check_name}` on `{evaluation.asset_key.to_user_string()}`: {text}"


def _latest_evaluations(context: dg.SensorEvaluationContext, seen: dict[str, int]):
    """The newest completed evaluation of every asset check in this code location that was not
    handled yet (``seen``: check -> record id). Uses the instance's per-check index, which every
    event-log storage keeps (run-sharded SQLite included)."""
    repo = context.repository_def
    keys = list(repo.asset_checks_defs_by_key) if repo is not None else []
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        record = context.instance.get_latest_asset_check_evaluation_record(key)
        evaluation = record.evaluation if record is not None else None
        if evaluation is None:
            continue  # never ran, or still running
        name = key.to_user_string()
        if seen.get(name) == record.id:
            continue
        seen[name] = record.id
        yield name, evaluation


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
    seen: dict[str, int] = cursor.get("seen", {})
    incidents = _incidents(ops_store)
    fired, resolved = [], []
    for name, evaluation in list(_latest_evaluations(context, seen)):
        if not _alertable(evaluation):
            continue
        key = f"check:{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        if evaluation.passed:
            if incidents.resolve(key, f"check `{evaluation.check_name}` passes again"):
                resolved.append(key)
        else:
            severity = "ERROR" if evaluation.severity == dg.AssetCheckSeverity.ERROR else "WARN"
            if incidents.fire(key, severity, _check_message(evaluation)):
                fired.append(key)
        if (key in incidents.firing(key)) == evaluation.passed:
            seen.pop(name, None)  # the alert could not be delivered: try again next tick
    bad = ops_alert_conditions(ops_store.engine(), reconciliation.reconciliation_settings())
    for prefix in ("polling_stopped:", "dead_letters_piling_up"):
        result = incidents.sync(prefix, {k: v for k, v in bad.items() if k.startswith(prefix)})
        fired += result["fired"]
        resolved += result["resolved"]
    if fired or resolved:
        context.log.info(f"alerts fired: {fired}; resolved: {resolved}")
    return dg.SensorResult(cursor=json.dumps({"seen": seen}, sort_keys=True))


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
