"""Synthetic canonical tables generated inside DuckDB (tests and ``bench/reconcile.py``).

Deterministic (a multiplicative hash of the row number, no RNG state), shaped like the canonical
contract in ARCHITECTURE.md ("Warehouse layout") with the columns reconciliation reads. Outcome
mix: 80% paid first time, 10% paid after one failure, 6% two failures (unrecovered in closed
months, open in the last), 2% voided after a failure, 2% refunded.
"""

from __future__ import annotations

from datetime import UTC, datetime

CURRENCY_CASE = """case
    when h % 100 < 40 then 'USD' when h % 100 < 65 then 'EUR' when h % 100 < 80 then 'GBP'
    when h % 100 < 88 then 'CAD' when h % 100 < 94 then 'AUD' when h % 100 < 97 then 'SEK'
    when h % 100 < 99 then 'JPY' else 'BRL' end"""
COUNTRY_CASE = """case
    when g % 100 < 35 then 'US' when g % 100 < 55 then 'DE' when g % 100 < 70 then 'GB'
    when g % 100 < 78 then 'FR' when g % 100 < 86 then 'CA' when g % 100 < 92 then 'AU'
    when g % 100 < 96 then 'SE' when g % 100 < 99 then 'JP' else 'BR' end"""


def generate(con, invoices: int, months: int = 12, start: datetime | None = None,
             as_of: datetime | None = None) -> None:
    """Create ``canonical.{subscriptions,invoices,transactions,invoice_outcomes}`` in ``con``.

    ``as_of`` is the newest ``updated_at`` (default now): the data looks fresh.
    """
    start = start or datetime(2025, 1, 1, tzinfo=UTC)
    as_of = as_of or datetime.now(UTC)
    span_s = months * 30 * 86400
    con.execute("set TimeZone = 'UTC'")
    con.execute("create schema if not exists canonical")
    params = {"n": invoices, "start": start, "span": span_s, "as_of": as_of, "months": months}
    con.execute(f"""
        create or replace table canonical.invoices as
        with base as (
            select i,
                (i * 2654435761) % 4294967296 as h,
                (i * 40503 + 12345) % 65521 as g,
                (i * 7919 + 17) % 100 as p,
                cast($start as timestamptz) + to_seconds(cast(i * $span / $n as bigint)) as created_at
            from range($n) t(i)
        )
        select
            'in_' || lpad(cast(i as varchar), 8, '0') as invoice_id,
            'cus_' || cast(i % 50000 as varchar) as customer_id,
            'sub_' || cast(i % 80000 as varchar) as subscription_id,
            case when p < 80 then 'paid' when p < 90 then 'paid'
                 when p < 96 then (case when created_at < cast($start as timestamptz)
                    + to_seconds(cast(($months - 1) * 30 * 86400 as bigint)) then 'uncollectible' else 'open' end)
                 when p < 98 then 'void' else 'refunded' end as status,
            1000 + (h % 9000) as amount_minor,
            {CURRENCY_CASE} as currency,
            case when p < 80 then 1 when p < 90 then 2 when p < 96 then 2 when p < 98 then 1 else 1 end
                as attempt_count,
            created_at,
            least(created_at + interval 3 day, cast($as_of as timestamptz)) as updated_at,
            strftime(created_at, '%Y-%m') as month,
            {COUNTRY_CASE} as customer_country,
            p
        from base
    """, params)
    con.execute("""
        create or replace table canonical.transactions as
        select
            'tx_' || substr(i.invoice_id, 4) || '_' || cast(k as varchar) as transaction_id,
            i.invoice_id, i.customer_id, i.subscription_id,
            case
                when i.p < 80 then 'succeeded'
                when i.p < 90 then (case when k = 1 then 'failed' else 'succeeded' end)
                when i.p < 98 then 'failed'
                else 'succeeded'
            end as status,
            i.amount_minor, i.currency, k as attempt_number,
            'stripe' as gateway,
            'ch_' || substr(i.invoice_id, 4) || '_' || cast(k as varchar) as gateway_transaction_id,
            case when i.p >= 80 and i.p < 98 and (k = 1 or i.p >= 90) then 'card_declined' end
                as decline_code,
            i.created_at + to_hours(cast((k - 1) * 24 as bigint)) as created_at,
            i.created_at + to_hours(cast((k - 1) * 24 as bigint)) as updated_at,
            strftime(i.created_at + to_hours(cast((k - 1) * 24 as bigint)), '%Y-%m') as month,
            i.customer_country
        from canonical.invoices as i, range(1, 3) r(k)
        where k <= i.attempt_count
    """)
    con.execute("""
        create or replace table canonical.invoice_outcomes as
        select
            i.invoice_id, i.month, i.customer_id, i.subscription_id, i.currency, i.amount_minor,
            i.customer_country, i.status,
            case
                when i.status = 'void' then 'voided'
                when i.status = 'refunded' then 'refunded'
                when i.status = 'paid' and i.p < 80 then 'first_attempt_success'
                when i.status = 'paid' then 'paid_after_failure'
                when i.status = 'uncollectible' then 'unrecovered'
                else 'open'
            end as outcome,
            i.attempt_count as attempts,
            case when i.p < 80 or i.p >= 98 then 0 when i.p < 90 then 1 when i.p < 96 then 2 else 1 end
                as failed_attempts,
            case when i.p >= 80 and i.p < 98 then i.created_at end as first_failed_at,
            case when i.status = 'paid' then i.updated_at end as paid_at,
            case when i.status = 'paid' and i.p >= 80 then i.amount_minor else 0 end
                as recovered_amount_minor,
            cast(null as timestamptz) as dunning_complete_at
        from canonical.invoices as i
    """)
    con.execute("""
        create or replace table canonical.subscriptions as
        select subscription_id, any_value(customer_id) as customer_id, 'active' as status,
               'plan_monthly' as plan_id, any_value(amount_minor) as amount_minor,
               any_value(currency) as currency, 1 as billing_period, 'month' as billing_period_unit,
               min(created_at) as activated_at, min(created_at) as created_at,
               max(updated_at) as updated_at, min(month) as month,
               any_value(customer_country) as customer_country
        from canonical.invoices group by subscription_id
    """)


# A consistent provider: what a provider that received every record would report.
PROVIDER_FROM_BILLING_SQL = """
select month, 'invoices' as measure, 'total' as dimension, '' as key, count(*) as value
from canonical.invoices group by month
union all
select month, 'invoices', 'currency', currency, count(*) from canonical.invoices group by month, currency
union all
select month, 'invoices', 'country', customer_country, count(*) from canonical.invoices
group by month, customer_country
union all
select month, 'transactions', 'total', '', count(*) from canonical.transactions group by month
union all
select month, 'failed_transactions', 'total', '', count(*) filter (where status = 'failed')
from canonical.transactions group by month
union all
select month, 'invoice_outcomes', 'outcome', outcome, count(*) from canonical.invoice_outcomes
group by month, outcome
"""


def provider_rows_from_billing(con) -> list[dict]:
    """Long provider rows equal to the billing side (source ``synthetic``)."""
    frame = con.execute(PROVIDER_FROM_BILLING_SQL).df()
    frame["source"] = "synthetic"
    return frame.to_dict("records")
