-- invoices whose state differs between billing and the provider, with age (hours).
-- kinds:
--   provider_recovered_billing_open: the provider reported the invoice recovered, billing still open
--   executed_action_without_transaction: a live retry was executed but no billing transaction followed
--   action_missed_after_ideal_retry_time: a recovery action is past its ideal retry time (+ grace),
--     never executed, and the invoice is still open
--   provider_copy_stale: billing changed the invoice after the provider last acknowledged it (+ grace)
-- parameters: $as_of (timestamptz), $provider, $missed_grace_minutes, $executed_grace_minutes
with invoices as (
    select invoice_id, month, status, updated_at
    from canonical.invoices
),

recovered_at_provider as (
    select
        'provider_recovered_billing_open' as kind,
        e.invoice_id,
        e.provider,
        'recovered' as provider_state,
        e.instruction || ' (' || e.mode || ', ' || e.result || ')' as detail,
        coalesce(e.executed_at, e.received_at) as since
    from ops_snapshot.executed_actions as e
    where e.business_action = 'mark_paid'
        or lower(e.instruction) in ('recovery.success', 'recovered', 'end_of_dunning_recovered')
),

retries_without_transaction as (
    select
        'executed_action_without_transaction' as kind,
        e.invoice_id,
        e.provider,
        e.business_action as provider_state,
        'executed ' || e.business_action || ' from ' || e.source || ' event ' || e.source_event_id
            as detail,
        e.executed_at as since
    from ops_snapshot.executed_actions as e
    where e.business_action = 'retry_now'
        and e.mode = 'live'
        and e.result = 'executed'
        and e.executed_at is not null
        and e.executed_at < cast($as_of as timestamptz)
            - interval 1 minute * cast($executed_grace_minutes as bigint)
        and not exists (
            select 1
            from canonical.transactions as t
            where t.invoice_id = e.invoice_id
                and t.created_at >= e.executed_at - interval 5 minute
        )
),

missed_actions as (
    select
        'action_missed_after_ideal_retry_time' as kind,
        a.invoice_id,
        a.provider,
        a.action_suggestion as provider_state,
        'action ' || a.action_id || ' ideal at ' || cast(a.ideal_retry_time as varchar) as detail,
        a.ideal_retry_time as since
    from ops_snapshot.recovery_actions as a
    where a.ideal_retry_time < cast($as_of as timestamptz)
            - interval 1 minute * cast($missed_grace_minutes as bigint)
        and not exists (
            select 1
            from ops_snapshot.executed_actions as e
            where e.provider = a.provider
                and e.source_event_id = a.action_id
        )
),

stale_at_provider as (
    select
        'provider_copy_stale' as kind,
        l.record_id as invoice_id,
        l.provider,
        'as pushed ' || cast(l.pushed_at as varchar) as provider_state,
        'billing updated after the last acknowledged push' as detail,
        i.updated_at as since
    from ops_snapshot.push_ledger as l
    inner join invoices as i on i.invoice_id = l.record_id
    where l.provider = $provider
        and i.updated_at > l.pushed_at
        and i.updated_at < cast($as_of as timestamptz)
            - interval 1 minute * cast($executed_grace_minutes as bigint)
),

candidates as (
    select * from recovered_at_provider
    union all
    select * from retries_without_transaction
    union all
    select * from missed_actions
    union all
    select * from stale_at_provider
)

select
    c.kind,
    c.invoice_id,
    i.month,
    c.provider,
    coalesce(i.status, 'unknown') as billing_state,
    c.provider_state,
    c.detail,
    c.since,
    round(epoch(cast($as_of as timestamptz) - c.since) / 3600.0, 2) as age_hours
from candidates as c
left join invoices as i on i.invoice_id = c.invoice_id
where c.kind not in ('provider_recovered_billing_open', 'action_missed_after_ideal_retry_time')
    or coalesce(i.status, 'open') = 'open'
order by age_hours desc, c.kind, c.invoice_id
