-- canonical.invoices: one row per invoice (latest updated_at wins), quarantined rows excluded.
-- columns: the export contract (billing_engine/schema.py) + month (partition) + customer_country.
-- parameters: $month_from, $month_to (yyyy-mm): the partition range materialized in one pass;
-- a record is deduped within its month (latest updated_at, then _loaded_at).
with
-- ids seen more than once in a month (an update, a file loaded again): only these get ranked
repeated as (
    select i._month, i.invoice_id
    from billing_raw.invoices as i
    where i._month between $month_from and $month_to and i.invoice_id is not null
    group by i._month, i.invoice_id
    having count(*) > 1
),

all_versions_ranked as (
    select
        i.*,
        1 as version_rank
    from billing_raw.invoices as i
    where
        i._month between $month_from and $month_to and i.invoice_id is not null
        and not exists (
            select 1 from repeated as k
            where k._month = i._month and k.invoice_id is not distinct from i.invoice_id
        )
    union all
    select
        i.*,
        row_number() over (
            partition by i._month, i.invoice_id
            order by i.updated_at desc nulls last, i._loaded_at desc
        ) as version_rank
    from billing_raw.invoices as i
    where
        i._month between $month_from and $month_to and i.invoice_id is not null
        and exists (
            select 1 from repeated as k
            where k._month = i._month and k.invoice_id is not distinct from i.invoice_id
        )
),

versions as (
    select * from all_versions_ranked where version_rank = 1
),

rejected as (
    select distinct record_id, month from canonical.quarantine
    where entity = 'invoices' and month between $month_from and $month_to
),

customer_versions as (
    select
        c.customer_id,
        c.country,
        row_number() over (
            partition by c.customer_id order by c.updated_at desc nulls last, c._loaded_at desc
        ) as version_rank
    from billing_raw.customers as c
    where c.customer_id in (
        select r.customer_id from billing_raw.invoices as r
        where r._month between $month_from and $month_to
    )
),

customers as (
    select customer_id, upper(country) as country from customer_versions where version_rank = 1
)

select
    i.invoice_id,
    i.customer_id,
    i.subscription_id,
    i.status,
    i.amount_minor,
    upper(i.currency) as currency,
    i.business_entity,
    i.attempt_count,
    i.due_at,
    i.paid_at,
    i.collection_paused,
    i.dunning_complete_at,
    i.handed_off_at,
    i.payment_method_update_requested_at,
    i.created_at,
    i.updated_at,
    i._month as month,
    c.country as customer_country
from versions as i
left join customers as c on c.customer_id = i.customer_id
where
    not exists (select 1 from rejected as r where r.record_id = i.invoice_id and r.month = i._month)
