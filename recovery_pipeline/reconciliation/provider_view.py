"""What the provider holds, by month, as one long table ``provider.counts``.

Columns: ``month`` (YYYY-MM), ``measure`` (invoices | transactions | failed_transactions |
invoice_outcomes), ``dimension`` (total | currency | country | outcome), ``key`` ('' for totals,
else the currency / country / outcome), ``value``, ``source`` (sandbox_counts | push_ledger),
``fetched_at``.

Two ways to learn it:
- a provider with a counts endpoint (the sandbox's ``GET /sandbox/counts``): every measure;
- a provider without one: the push ledger's acknowledged records by month stand in (record
  counts only: the provider acknowledged them, so it holds them). Measures the ledger cannot
  know (failed counts, outcomes, coverage) are then simply not reported, and parity treats them
  as "not reported" rather than as zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import httpx
import pandas as pd
import sqlalchemy as sa

COLUMNS = ["month", "measure", "dimension", "key", "value", "source", "fetched_at"]
COUNT_MEASURES = ("invoices", "transactions", "failed_transactions")
OUTCOMES = ("first_attempt_success", "paid_after_failure", "unrecovered", "refunded", "voided", "open")

# spellings a counts payload may use for each breakdown -> (measure, dimension)
_BREAKDOWNS = {
    "by_currency": ("invoices", "currency"),
    "currencies": ("invoices", "currency"),
    "invoices_by_currency": ("invoices", "currency"),
    "currency": ("invoices", "currency"),
    "by_country": ("invoices", "country"),
    "countries": ("invoices", "country"),
    "invoices_by_country": ("invoices", "country"),
    "country": ("invoices", "country"),
    "outcomes": ("invoice_outcomes", "outcome"),
    "invoice_outcomes": ("invoice_outcomes", "outcome"),
    "recovery_outcomes": ("invoice_outcomes", "outcome"),
}
_TOTALS = {
    "invoices": "invoices",
    "invoice_count": "invoices",
    "transactions": "transactions",
    "transaction_count": "transactions",
    "failed_transactions": "failed_transactions",
    "failed_transaction_count": "failed_transactions",
    "failed": "failed_transactions",
}


class CountsPayloadError(ValueError):
    """The provider's counts payload has a shape we cannot read (the message says where)."""


def _as_int(value, where: str) -> int:
    if isinstance(value, Mapping):  # e.g. {"EUR": {"invoices": 3, "transactions": 5}}
        for name in ("invoices", "count", "value", "total"):
            if name in value:
                return _as_int(value[name], where)
        raise CountsPayloadError(f"{where}: no invoices/count in {sorted(value)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CountsPayloadError(f"{where}: expected a number, got {type(value).__name__}")
    return int(value)


def _month_rows(month: str, body: Mapping) -> Iterable[dict]:
    for name, value in body.items():
        if name in ("month", "provider"):
            continue
        if name in _TOTALS and not isinstance(value, Mapping):
            yield {"month": month, "measure": _TOTALS[name], "dimension": "total", "key": "",
                   "value": _as_int(value, f"{month}.{name}")}
        elif name in _BREAKDOWNS:
            measure, dimension = _BREAKDOWNS[name]
            if isinstance(value, list):  # [{"currency": "EUR", "invoices": 3}, ...] or [{"key":..}]
                items = {}
                for item in value:
                    k = item.get("key", item.get(dimension))
                    items[k] = item.get("value", item.get("invoices", item.get("count")))
                value = items
            if not isinstance(value, Mapping):
                raise CountsPayloadError(f"{month}.{name}: expected a mapping of {dimension} -> count")
            for key, n in value.items():
                yield {"month": month, "measure": measure, "dimension": dimension,
                       "key": "" if key is None else str(key), "value": _as_int(n, f"{month}.{name}.{key}")}
        elif name == "by_outcome" or name == "recovery":  # tolerated aliases
            yield from _month_rows(month, {"outcomes": value})


def normalize_counts(payload) -> list[dict]:
    """Read a counts payload into long rows. Accepted shapes:

    - long rows: ``[{month, measure, dimension, key, value}]`` (or under ``rows``/``counts``);
    - per month (the sandbox's ``GET /sandbox/counts``): ``{"months": {"2026-01": {...}}}``, ``{"months": [{"month": ..., ...}]}`` or
      ``{"2026-01": {...}}``, each month holding totals (``invoices``, ``transactions``,
      ``failed_transactions``) and breakdowns (``by_currency``, ``by_country``, ``outcomes``).
    """
    if isinstance(payload, Mapping):
        for wrapper in ("rows", "counts", "data", "items"):
            if wrapper in payload and isinstance(payload[wrapper], list | Mapping):
                return normalize_counts(payload[wrapper])
        months = payload.get("months")
        if isinstance(months, list):
            return normalize_counts(months)
        explicit = isinstance(months, Mapping)
        rows: list[dict] = []
        for month, body in (months if explicit else payload).items():
            if not explicit and not (isinstance(month, str) and len(month) == 7 and month[4] == "-"):
                continue  # metadata such as provider / generated_at / totals
            if not isinstance(body, Mapping):
                raise CountsPayloadError(f"{month}: expected an object of counts")
            rows.extend(_month_rows(month, body))
        return rows
    if isinstance(payload, list):
        rows = []
        for i, item in enumerate(payload):
            if not isinstance(item, Mapping) or "month" not in item:
                raise CountsPayloadError(f"item {i}: expected an object with a month")
            if "measure" in item:
                rows.append({"month": str(item["month"]), "measure": str(item["measure"]),
                             "dimension": str(item.get("dimension") or "total"),
                             "key": "" if item.get("key") is None else str(item["key"]),
                             "value": _as_int(item.get("value"), f"item {i}")})
            else:
                rows.extend(_month_rows(str(item["month"]), item))
        return rows
    raise CountsPayloadError(f"expected an object or a list, got {type(payload).__name__}")


def fetch_sandbox_counts(base_url: str, *, headers: Mapping[str, str] | None = None,
                         transport: httpx.BaseTransport | None = None, timeout_s: float = 30.0,
                         path: str = "/sandbox/counts", provider: str | None = None) -> list[dict]:
    """GET the provider's per-month counts and return long rows (source ``sandbox_counts``)."""
    params = {"provider": provider} if provider else None
    with httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport,
                      headers=dict(headers or {})) as client:
        resp = client.get(path, params=params)
        resp.raise_for_status()
        rows = normalize_counts(resp.json())
    return [{**r, "source": "sandbox_counts"} for r in rows]


def ledger_counts(engine: sa.Engine, provider: str) -> list[dict]:
    """Acknowledged records by month from the push ledger (the stand-in without a counts endpoint)."""
    from recovery_pipeline.opsstore.models import push_ledger as pl

    q = (sa.select(pl.c.month, pl.c.entity, sa.func.count().label("n"))
         .where(pl.c.provider == provider, pl.c.entity.in_(["invoices", "transactions"]),
                pl.c.month.is_not(None))
         .group_by(pl.c.month, pl.c.entity))
    with engine.connect() as conn:
        return [{"month": m, "measure": e, "dimension": "total", "key": "", "value": int(n),
                 "source": "push_ledger"} for m, e, n in conn.execute(q)]


def counts_frame(rows: list[dict], fetched_at: datetime | None = None) -> pd.DataFrame:
    fetched_at = fetched_at or datetime.now(UTC)
    frame = pd.DataFrame(rows, columns=COLUMNS[:-1])
    frame["value"] = frame["value"].astype("int64")
    frame["fetched_at"] = pd.Timestamp(fetched_at)
    return frame[COLUMNS]


def write_provider_counts(con, rows: list[dict], fetched_at: datetime | None = None) -> pd.DataFrame:
    """Replace ``provider.counts`` (DuckDB connection) with ``rows``; returns the frame written."""
    frame = counts_frame(rows, fetched_at)
    con.execute("create schema if not exists provider")
    con.register("_provider_counts_frame", frame)
    try:
        con.execute("""
            create or replace table provider.counts as
            select cast(month as varchar) as month, cast(measure as varchar) as measure,
                   cast(dimension as varchar) as dimension, cast(key as varchar) as key,
                   cast(value as bigint) as value, cast(source as varchar) as source,
                   cast(fetched_at as timestamptz) as fetched_at
            from _provider_counts_frame
        """)
    finally:
        con.unregister("_provider_counts_frame")
    return frame
