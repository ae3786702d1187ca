"""Checks on the reconciliation tables.

Parity checks run the great-expectations suites (in code, pandas, on the small parity frame)
once per evaluation and report each named predicate. ERROR checks are blocking: the assets
downstream of ``reconciliation/monthly_parity`` (the recovery KPIs) do not materialize while
billing and provider disagree. A failed check does not fail the run: the alerting sensor
(``defs/monitoring/sensors.py``) reads check evaluations and raises the alert.
"""


import json

import dagster as dg

from recovery_pipeline.reconciliation.checking import PARITY_CHECKS, parity_outcomes
from recovery_pipeline.reconciliation.parity import read_parity
from recovery_pipeline.reconciliation.warehouse_con import connect
from recovery_pipeline.resources import ReconciliationConfig, WarehouseResource

PARITY_KEY = dg.AssetKey(["reconciliation", "monthly_parity"])
MISMATCH_KEY = dg.AssetKey(["reconciliation", "state_mismatches"])

_DESCRIPTIONS = {
    "invoice_counts_match_provider": "Invoice counts per month equal what the provider holds.",
    "transaction_counts_match_provider": "Payment attempts per month equal the provider's.",
    "failed_transaction_counts_match_provider":
        "Failed attempts (initial failures and failed retries) per month equal the provider's.",
    "recovery_outcomes_match_provider":
        "Invoices per recovery outcome (paid after failure vs first-attempt success, ...) agree.",
    "currencies_match_provider":
        "Every currency is ISO-4217 on both sides and high-volume currencies have equal counts.",
    "countries_covered_at_provider": "Every high-volume country is present and equal at the provider.",
    "provider_reports_every_measure": "The provider-side view reports every reconciled measure.",
}

_SEVERITY = {"ERROR": dg.AssetCheckSeverity.ERROR, "WARN": dg.AssetCheckSeverity.WARN}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=PARITY_KEY, description=_DESCRIPTIONS[name],
                          blocking=severity == "ERROR")
        for name, (_suite, _fam, severity) in PARITY_CHECKS.items()
    ] + [dg.AssetCheckSpec("provider_reports_every_measure", asset=PARITY_KEY,
                           description=_DESCRIPTIONS["provider_reports_every_measure"])],
    can_subset=True,
)
def monthly_parity_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource,
                          reconciliation: ReconciliationConfig):
    """Count, currency, outcome and country parity (great-expectations suites) per month."""
    with connect(warehouse.target, read_only=True) as con:
        parity = read_parity(con)
    settings = reconciliation.reconciliation_settings()
    selected = {k.name for k in context.selected_asset_check_keys}
    for o in parity_outcomes(parity, settings):
        if o.name not in selected:
            continue
        tol = settings.tolerance(PARITY_CHECKS[o.name][1][0]) if o.name in PARITY_CHECKS else None
        yield dg.AssetCheckResult(
            check_name=o.name,
            asset_key=PARITY_KEY,
            passed=o.passed,
            severity=_SEVERITY[o.severity],
            description=o.summary[:1000],
            metadata={
                "summary": o.summary[:2000],
                "months": ", ".join(o.months) or "none",
                "differences": dg.MetadataValue.json(o.differences[:50]),
                "difference_count": len(o.differences),
                "suite": o.suite or "n/a",
                "suite_result": o.suite_summary[:1000] or "n/a",
                "tolerance": json.dumps({"abs": tol.abs, "pct": tol.pct}) if tol else "n/a",
            },
        )


# kind -> (check name, severity, description)
MISMATCH_CHECKS = {
    "provider_recovered_billing_open": (
        "no_recovered_invoice_left_open", "ERROR",
        "No invoice the provider reports recovered is still open in billing."),
    "executed_action_without_transaction": (
        "executed_retries_produced_transactions", "WARN",
        "Every executed live retry produced a billing transaction."),
    "action_missed_after_ideal_retry_time": (
        "no_action_missed_after_ideal_retry_time", "WARN",
        "No recovery action is past its ideal retry time without being executed."),
    "provider_copy_stale": (
        "provider_copy_is_current", "WARN",
        "The provider has the latest version of every invoice it was sent."),
}


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=MISMATCH_KEY, description=desc)
           for name, _sev, desc in MISMATCH_CHECKS.values()],
    can_subset=True,
)
def state_mismatch_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    """One predicate per kind of state mismatch; failing metadata lists the oldest invoices."""
    selected = {k.name for k in context.selected_asset_check_keys}
    with connect(warehouse.target, read_only=True) as con:
        frame = con.execute("select kind, invoice_id, month, billing_state, provider_state, age_hours "
                            "from reconciliation.state_mismatches order by age_hours desc").df()
    for kind, (name, severity, _desc) in MISMATCH_CHECKS.items():
        if name not in selected:
            continue
        rows = frame[frame["kind"] == kind]
        examples = rows.head(20).to_dict("records")
        summary = (f"{len(rows)} invoice(s): " + ", ".join(
            f"{r['invoice_id']} ({r['month']}, {r['age_hours']:.1f} h)" for r in examples[:10])
                   if len(rows) else "none")
        yield dg.AssetCheckResult(
            check_name=name, asset_key=MISMATCH_KEY, passed=rows.empty,
            severity=_SEVERITY[severity], description=summary[:1000],
            metadata={"summary": summary[:2000], "count": len(rows),
                      "oldest_age_hours": float(rows["age_hours"].max()) if len(rows) else 0.0,
                      "examples": dg.MetadataValue.json(
                          [{k: (None if v != v else v) for k, v in r.items()} for r in examples])},
        )
