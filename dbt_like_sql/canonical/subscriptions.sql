-- canonical.subscriptions: one row per subscription (latest updated_at wins), quarantined rows excluded.
-- columns: the export contract (billing_engine/schema.py) + month (partition) + customer_country.
-- parameters: $month_from, $month_to (yyyy-mm): the partition range materialized in one pass;
-- a record is deduped within its month (latest updated_at, then _loaded_at).
with
-- ids seen more than once in a month (an update, a file loaded again): only these get ranked
repeated as (
    select s._month, s.subscription_id
    from billing_raw.subscriptions as s
    where s._month between $month_from and $month_to and s.subscription_id is not null
    group by s._month, s.subscription_id
    having count(*) > 1
),

all_versions_ranked as (
    select
        s.*,
        1 as version_rank
    from billing_raw.subscriptions as s
    where
        s._month between $month_from and $month_to and s.subscription_id is not null
        and not exists (
            select 1 from repeated as k
            where k._month = s._month and k.subscription_id is not distinct from s.subscription_id
        )
    union all
    select
        s.*,
        row_number() over (
            partition by s._month, s.subscription_id
            order by s.updated_at desc nulls last, s._loaded_at desc
        ) as version_rank
    from billing_raw.subscriptions as s
    where
        s._month between $month_from and $month_to and s.subscription_id is not null
        and exists (
            select 1 from repeated as k
            where k._month = s._month and k.subscription_id is not distinct from s.subscription_id
        )
),

versions as (
    select * from all_versions_ranked where version_rank = 1
),

rejected as (
    select distinct record_id, month from canonical.quarantine
    where entity = 'subscriptions' and month between $month_from and $month_to
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
        select r.customer_id from billing_raw.subscriptions as r
        where r._month between $month_from and $month_to
    )
),

customers as (
    select customer_id, upper(country) as country from customer_versions where version_rank = 1
)

select
    s.subscription_id,
    s.customer_id,
    s.plan_id,
    s.status,
    s.amount_minor,
    upper(s.currency) as currency,
    s.billing_period,
    s.billing_period_unit,
    s.business_entity,
    s.activated_at,
    s.canceled_at,
    s.expires_at,
    s.dunning_complete_at,
    s.created_at,
    s.updated_at,
    s._month as month,
    c.country as customer_country
from versions as s
left join customers as c on c.customer_id = s.customer_id
where
    not exists (select 1 from rejected as r where r.record_id = s.subscription_id and r.month = s._month)
