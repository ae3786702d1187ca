"""Parity verdicts: the expectation suites' results turned into named, explained check outcomes.

Used by the Dagster asset checks and by ``bench/reconcile.py``; pure (no Dagster).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from recovery_pipeline.reconciliation import suites
from recovery_pipeline.reconciliation.config import ReconciliationSettings
from recovery_pipeline.reconciliation.parity import describe_differences, evaluate

# check name -> (suite, families it judges, severity)
PARITY_CHECKS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "invoice_counts_match_provider": ("count_parity", ("invoices",), "ERROR"),
    "transaction_counts_match_provider": ("count_parity", ("transactions",), "ERROR"),
    "failed_transaction_counts_match_provider": ("count_parity", ("failed_transactions",), "ERROR"),
    "recovery_outcomes_match_provider": ("outcome_parity", ("invoice_outcomes",), "ERROR"),
    "currencies_match_provider": ("currency_parity", ("invoices_by_currency",), "ERROR"),
    "countries_covered_at_provider": ("country_coverage", ("invoices_by_country",), "WARN"),
}
ALL_FAMILIES = ("invoices", "transactions", "failed_transactions", "invoice_outcomes",
                "invoices_by_currency", "invoices_by_country")


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    severity: str
    summary: str
    differences: list[dict] = field(default_factory=list)
    months: list[str] = field(default_factory=list)
    suite: str = ""
    suite_summary: str = ""
    not_reported: bool = False


def _row_dicts(rows: pd.DataFrame) -> list[dict]:
    out = []
    for r in rows.itertuples(index=False):
        pv = getattr(r, "provider_value")
        diff = getattr(r, "difference")
        out.append({"month": r.month, "measure": r.family, "key": r.key,
                    "billing": int(r.billing_value),
                    "provider": None if pd.isna(pv) else int(pv),
                    "difference": None if pd.isna(diff) else int(diff)})
    return out


def parity_outcomes(parity: pd.DataFrame, settings: ReconciliationSettings | None = None,
                    *, evaluated: pd.DataFrame | None = None) -> list[CheckOutcome]:
    """Run every suite once over the evaluated parity frame and judge each named check."""
    ev = evaluated if evaluated is not None else evaluate(parity, settings)
    results = suites.run_all(ev)
    reported = set(ev.loc[ev["provider_reports"], "family"]) if len(ev) else set()
    outcomes = []
    for name, (suite_name, families, severity) in PARITY_CHECKS.items():
        res = results[suite_name]
        if not any(f in reported for f in families):
            outcomes.append(CheckOutcome(name, True, severity,
                                         f"not reported by the provider ({', '.join(families)}): "
                                         "nothing to compare", suite=suite_name,
                                         suite_summary=res.summary(), not_reported=True))
            continue
        bad = res.failed_rows
        bad = bad[bad["family"].isin(families)] if bad is not None and len(bad) else ev.iloc[0:0]
        diffs = _row_dicts(bad)
        by_month = [d for d in diffs if d["month"] != "total"] or diffs
        months = sorted({d["month"] for d in by_month})
        if diffs:
            summary = f"{len(by_month)} difference(s) in {', '.join(months)}: " + describe_differences(by_month)
        else:
            summary = f"{', '.join(families)} agree with the provider in every month"
        outcomes.append(CheckOutcome(name, not diffs, severity, summary, diffs, months, suite_name,
                                     res.summary()))
    missing = [f for f in ALL_FAMILIES if f not in reported]
    outcomes.append(CheckOutcome(
        "provider_reports_every_measure", not missing, "WARN",
        f"the provider does not report: {', '.join(missing)}" if missing
        else "the provider reports every reconciled measure"))
    return outcomes
