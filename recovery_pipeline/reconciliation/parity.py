"""Monthly parity: reading ``reconciliation.monthly_parity``, applying tolerances, reporting.

The SQL (``dbt_like_sql/reconciliation/monthly_parity.sql``) does the heavy lifting over the
canonical tables; everything here works on its small result (one row per month, measure and key).
"""

from __future__ import annotations

import pandas as pd

from recovery_pipeline.reconciliation.config import ReconciliationSettings

PARITY_COLUMNS = ["month", "measure", "dimension", "key", "billing_value", "provider_value",
                  "difference", "pct_difference", "provider_reports"]

# (measure, dimension) in the parity table -> the tolerance / check family name
FAMILY = {
    ("invoices", "total"): "invoices",
    ("transactions", "total"): "transactions",
    ("failed_transactions", "total"): "failed_transactions",
    ("invoice_outcomes", "outcome"): "invoice_outcomes",
    ("invoices", "currency"): "invoices_by_currency",
    ("invoices", "country"): "invoices_by_country",
}


def family_of(measure: str, dimension: str) -> str:
    return FAMILY.get((measure, dimension), f"{measure}_by_{dimension}")


def read_parity(con) -> pd.DataFrame:
    """The parity table from a DuckDB connection."""
    return con.execute("select * from reconciliation.monthly_parity").df()


def evaluate(frame: pd.DataFrame, settings: ReconciliationSettings | None = None) -> pd.DataFrame:
    """Add ``family``, ``allowed``, ``excess`` (difference beyond tolerance), ``share`` and
    ``high_volume`` (currency/country rows) and ``breach`` to a parity frame.

    ``allowed`` = the configured tolerance, plus (for currency / country / outcome rows) the
    month's invoice-count difference, so one missing invoice fails the count check only."""
    settings = settings or ReconciliationSettings()
    out = frame.copy()
    if out.empty:
        for col, dtype in (("family", "object"), ("allowed", "float64"), ("excess", "float64"),
                           ("share", "float64"), ("high_volume", "bool"), ("breach", "bool")):
            out[col] = pd.Series(dtype=dtype)
        return out
    out["family"] = [family_of(m, d) for m, d in zip(out["measure"], out["dimension"], strict=True)]
    billing = out["billing_value"].astype("float64")
    provider = out["provider_value"].astype("float64")  # NaN where the provider does not report
    tol_abs = out["family"].map(lambda f: settings.tolerance(f).abs).astype("float64")
    tol_pct = out["family"].map(lambda f: settings.tolerance(f).pct).astype("float64")
    out["allowed"] = pd.concat([tol_abs, tol_pct / 100.0 * pd.concat(
        [billing.abs(), provider.abs().fillna(0)], axis=1).max(axis=1)], axis=1).max(axis=1)
    totals = out[(out["measure"] == "invoices") & (out["dimension"] == "total")].set_index("month")
    # A breakdown row (currency, country, outcome) may differ by as much as the month's invoice
    # count differs: a missing invoice is the count check's finding, not a mapping error. What
    # is left beyond that is a wrong mapping / classification.
    explained = out["month"].map(totals["difference"].abs()).astype("float64").fillna(0)
    breakdown = out["dimension"] != "total"
    out["allowed"] = out["allowed"] + explained.where(breakdown, 0.0)
    diff = (billing - provider).abs()
    out["excess"] = (diff - out["allowed"]).clip(lower=0).fillna(0.0)

    b_tot = out["month"].map(totals["billing_value"]).astype("float64")
    p_tot = out["month"].map(totals["provider_value"]).astype("float64")
    b_share = (billing / b_tot.where(b_tot > 0)).fillna(0)
    p_share = (provider / p_tot.where(p_tot > 0)).fillna(0)
    out["share"] = pd.concat([b_share, p_share], axis=1).max(axis=1)
    keyed = out["dimension"].isin(["currency", "country"])
    out["high_volume"] = keyed & (out["share"] >= settings.high_volume_min_share)
    out["share"] = out["share"].where(keyed, 1.0)
    out["breach"] = out["excess"] > 0
    return out


def differences(evaluated: pd.DataFrame, family: str | None = None, *, high_volume_only: bool = False,
                include_total: bool = False) -> list[dict]:
    """The rows that differ beyond tolerance, as small dicts naming month, measure, key and by how much."""
    rows = evaluated[evaluated["breach"]]
    if family is not None:
        rows = rows[rows["family"] == family]
    if high_volume_only:
        rows = rows[rows["high_volume"]]
    if not include_total:
        rows = rows[rows["month"] != "total"]
    return [
        {"month": r.month, "measure": r.family, "key": r.key, "billing": int(r.billing_value),
         "provider": None if pd.isna(r.provider_value) else int(r.provider_value),
         "difference": None if pd.isna(r.difference) else int(r.difference)}
        for r in rows.itertuples(index=False)
    ]


def describe_differences(diffs: list[dict], limit: int = 10) -> str:
    parts = []
    for d in diffs[:limit]:
        key = f"[{d['key']}]" if d["key"] else ""
        parts.append(f"{d['month']} {d['measure']}{key}: billing {d['billing']} vs provider "
                     f"{d['provider']} ({d['difference']:+d})")
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(parts) + more


def parity_table(con, *, settings: ReconciliationSettings | None = None,
                 families: tuple[str, ...] = ("invoices", "transactions", "failed_transactions",
                                              "invoice_outcomes")) -> list[dict]:
    """Rows for a summary: per month (and 'total') and measure, billing vs provider and status.

    ``con`` is a DuckDB connection to the warehouse holding ``reconciliation.monthly_parity``.
    Currency/country rows are summarised by :func:`coverage_summary` instead (they are many).
    """
    ev = evaluate(read_parity(con), settings)
    ev = ev[ev["family"].isin(families)]
    out = []
    for r in ev.sort_values(["month", "family", "key"]).itertuples(index=False):
        status = "not reported" if not r.provider_reports else ("MISMATCH" if r.breach else "ok")
        out.append({"month": r.month, "measure": r.family + (f"[{r.key}]" if r.key else ""),
                    "billing": int(r.billing_value),
                    "provider": None if pd.isna(r.provider_value) else int(r.provider_value),
                    "difference": None if pd.isna(r.difference) else int(r.difference),
                    "status": status})
    return out


def coverage_summary(con, settings: ReconciliationSettings | None = None) -> list[dict]:
    """Per currency / country over all months: both sides' counts and whether they agree."""
    ev = evaluate(read_parity(con), settings)
    ev = ev[(ev["month"] == "total") & ev["dimension"].isin(["currency", "country"])]
    return [{"dimension": r.dimension, "key": r.key, "billing": int(r.billing_value),
             "provider": None if pd.isna(r.provider_value) else int(r.provider_value),
             "status": "not reported" if not r.provider_reports else ("MISMATCH" if r.breach else "ok")}
            for r in ev.sort_values(["dimension", "key"]).itertuples(index=False)]


def mismatches(con, limit: int = 50) -> list[dict]:
    """Rows of ``reconciliation.state_mismatches`` (oldest first), for a summary."""
    frame = con.execute(
        "select kind, invoice_id, month, billing_state, provider_state, detail, age_hours "
        "from reconciliation.state_mismatches order by age_hours desc, invoice_id limit ?",
        [limit]).df()
    return frame.to_dict("records")
