-- how fresh each canonical source is: newest updated_at (the source's own timestamp), row count,
-- and lag behind $as_of in hours.
with newest as (
    select 'subscriptions' as entity, max(updated_at) as newest_updated_at, count(*) as row_count
    from canonical.subscriptions
    union all
    select 'invoices' as entity, max(updated_at) as newest_updated_at, count(*) as row_count
    from canonical.invoices
    union all
    select 'transactions' as entity, max(updated_at) as newest_updated_at, count(*) as row_count
    from canonical.transactions
)

select
    entity,
    newest_updated_at,
    row_count,
    round(epoch(cast($as_of as timestamptz) - newest_updated_at) / 3600.0, 3) as lag_hours
from newest
order by entity
