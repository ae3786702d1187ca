-- canonical.invoice_outcomes: how each invoice of the month ended, from its payment attempts.
-- outcome: first_attempt_success | paid_after_failure | unrecovered | refunded | voided | open.
-- attempts are read across months (a retry can land in the month after the invoice); a run over
-- month M+1 also re-materializes the earlier months whose invoices got attempts in M+1
-- (sqlmodels/runner.py DEPENDENT_MONTHS_SQL).
-- parameters: $month_from, $month_to (yyyy-mm): the partition range materialized in one pass.
with
month_invoices as (
    select * from canonical.invoices where month between $month_from and $month_to
),

attempts as (
    select
        t.invoice_id,
        count(*) as attempts,
        count(case when t.status = 'failed' then 1 end) as failed_attempts,
        count(case when t.status = 'refunded' then 1 end) as refunds,
        min(case when t.status = 'failed' then t.created_at end) as first_failed_at
    from canonical.transactions as t
    where t.invoice_id in (
        select ri.invoice_id from canonical.invoices as ri
        where ri.month between $month_from and $month_to
    )
    group by t.invoice_id
),

judged as (
    select
        i.*,
        coalesce(a.attempts, 0) as attempts,
        coalesce(a.failed_attempts, 0) as failed_attempts,
        a.first_failed_at,
        case
            when i.status = 'void' then 'voided'
            when i.status = 'refunded' or coalesce(a.refunds, 0) > 0 then 'refunded'
            when i.status = 'paid' and coalesce(a.failed_attempts, 0) = 0 then 'first_attempt_success'
            when i.status = 'paid' then 'paid_after_failure'
            when i.status = 'uncollectible' or i.dunning_complete_at is not null then 'unrecovered'
            else 'open'
        end as outcome
    from month_invoices as i
    left join attempts as a on a.invoice_id = i.invoice_id
)

select
    invoice_id,
    month,
    customer_id,
    subscription_id,
    currency,
    amount_minor,
    customer_country,
    status,
    outcome,
    attempts,
    failed_attempts,
    first_failed_at,
    paid_at,
    case when outcome = 'paid_after_failure' then amount_minor else 0 end as recovered_amount_minor,
    dunning_complete_at
from judged
