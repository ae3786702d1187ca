-- monthly parity: billing (canonical tables) vs what the provider holds (provider.counts),
-- one row per month, measure, dimension and key, plus month = 'total' over all months.
-- measures: invoices (total, by currency, by country), transactions (payment attempts),
-- failed_transactions (initial failures and failed retries), invoice_outcomes (by outcome).
-- provider_value is null when the provider does not report that measure at all (e.g. the push
-- ledger stand-in only knows record counts); a key the provider lacks counts as 0.
with invoice_cells as materialized (
    -- one scan of the invoices: counts per month, currency and country (a small table)
    select month, currency, customer_country as country, count(*) as value
    from canonical.invoices
    group by month, currency, customer_country
),

transaction_months as materialized (
    select month, count(*) as attempts, count(*) filter (where status = 'failed') as failed
    from canonical.transactions
    group by month
),

outcome_months as (
    select month, outcome as key, count(*) as value
    from canonical.invoice_outcomes
    group by month, outcome
),

billing_by_month as materialized (
    select month, 'invoices' as measure, 'total' as dimension, '' as key, sum(value) as value
    from invoice_cells group by month
    union all
    select month, 'invoices' as measure, 'currency' as dimension, coalesce(currency, '') as key,
        sum(value) as value
    from invoice_cells group by month, coalesce(currency, '')
    union all
    select month, 'invoices' as measure, 'country' as dimension, coalesce(country, '') as key,
        sum(value) as value
    from invoice_cells group by month, coalesce(country, '')
    union all
    select month, 'transactions' as measure, 'total' as dimension, '' as key, attempts as value
    from transaction_months
    union all
    select month, 'failed_transactions' as measure, 'total' as dimension, '' as key, failed as value
    from transaction_months
    union all
    select month, 'invoice_outcomes' as measure, 'outcome' as dimension, key, value from outcome_months
),

billing as (
    select month, measure, dimension, key, value from billing_by_month
    union all
    select 'total' as month, measure, dimension, key, sum(value) as value
    from billing_by_month
    group by measure, dimension, key
),

provider_by_month as materialized (
    select month, measure, dimension, coalesce(key, '') as key, sum(value) as value
    from provider.counts
    where month <> 'total'
    group by month, measure, dimension, coalesce(key, '')
),

provider_side as (
    select month, measure, dimension, key, value from provider_by_month
    union all
    select 'total' as month, measure, dimension, key, sum(value) as value
    from provider_by_month
    group by measure, dimension, key
),

reported as (
    select distinct measure, dimension from provider_by_month
),

joined as (
    select
        coalesce(b.month, p.month) as month,
        coalesce(b.measure, p.measure) as measure,
        coalesce(b.dimension, p.dimension) as dimension,
        coalesce(b.key, p.key) as key,
        coalesce(b.value, 0) as billing_value,
        p.value as provider_raw
    from billing as b
    full outer join provider_side as p
        on b.month = p.month
        and b.measure = p.measure
        and b.dimension = p.dimension
        and b.key = p.key
),

sided as (
    select
        j.month,
        j.measure,
        j.dimension,
        j.key,
        j.billing_value,
        case when r.measure is null then null else coalesce(j.provider_raw, 0) end as provider_value
    from joined as j
    left join reported as r
        on r.measure = j.measure
        and r.dimension = j.dimension
)

select
    month,
    measure,
    dimension,
    key,
    cast(billing_value as bigint) as billing_value,
    cast(provider_value as bigint) as provider_value,
    cast(billing_value - provider_value as bigint) as difference,
    case
        when greatest(billing_value, provider_value) > 0
            then abs(billing_value - provider_value) * 1.0 / greatest(billing_value, provider_value)
        else 0.0
    end as pct_difference,
    provider_value is not null as provider_reports
from sided
order by month, measure, dimension, key
