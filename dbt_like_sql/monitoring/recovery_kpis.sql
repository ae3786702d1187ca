-- recovery KPIs by month (invoice month) and currency, plus currency = 'all' per month.
-- failed_invoices: invoices with at least one failed payment attempt;
-- recovery_rate = paid after failure / failed invoices; failed_recovery_rate = unrecovered / failed.
-- amounts are in minor units of the row's currency (null on the 'all' rows: currencies don't add).
with outcomes as (
    select month, coalesce(currency, '') as currency, outcome, failed_attempts, recovered_amount_minor
    from canonical.invoice_outcomes
),

by_month as (
    select
        month,
        case when grouping(currency) = 1 then 'all' else currency end as currency,
        count(*) as invoices,
        count(*) filter (where failed_attempts > 0) as failed_invoices,
        count(*) filter (where outcome = 'paid_after_failure') as recovered_invoices,
        count(*) filter (where outcome = 'unrecovered') as unrecovered_invoices,
        count(*) filter (where outcome = 'open' and failed_attempts > 0) as open_after_failure,
        case when grouping(currency) = 1 then null
            else sum(case when outcome = 'paid_after_failure' then recovered_amount_minor else 0 end)
        end as recovered_amount_minor
    from outcomes
    group by grouping sets ((month, currency), (month))
)

select
    month,
    currency,
    invoices,
    failed_invoices,
    recovered_invoices,
    unrecovered_invoices,
    open_after_failure,
    cast(recovered_amount_minor as bigint) as recovered_amount_minor,
    case when failed_invoices > 0 then recovered_invoices * 1.0 / failed_invoices end as recovery_rate,
    case when failed_invoices > 0 then unrecovered_invoices * 1.0 / failed_invoices end
        as failed_recovery_rate
from by_month
order by month, currency
