-- canonical.transactions: every payment attempt (failed and successful), one row per transaction
-- (latest updated_at wins), quarantined rows excluded. A retry is its own transaction row.
-- columns: the export contract (billing_engine/schema.py) + month (partition) + customer_country.
-- parameters: $month_from, $month_to (yyyy-mm): the partition range materialized in one pass;
-- a record is deduped within its month (latest updated_at, then _loaded_at).
with
-- ids seen more than once in a month (an update, a file loaded again): only these get ranked
repeated as (
    select t._month, t.transaction_id
    from billing_raw.transactions as t
    where t._month between $month_from and $month_to and t.transaction_id is not null
    group by t._month, t.transaction_id
    having count(*) > 1
),

all_versions_ranked as (
    select
        t.*,
        1 as version_rank
    from billing_raw.transactions as t
    where
        t._month between $month_from and $month_to and t.transaction_id is not null
        and not exists (
            select 1 from repeated as k
            where k._month = t._month and k.transaction_id is not distinct from t.transaction_id
        )
    union all
    select
        t.*,
        row_number() over (
            partition by t._month, t.transaction_id
            order by t.updated_at desc nulls last, t._loaded_at desc
        ) as version_rank
    from billing_raw.transactions as t
    where
        t._month between $month_from and $month_to and t.transaction_id is not null
        and exists (
            select 1 from repeated as k
            where k._month = t._month and k.transaction_id is not distinct from t.transaction_id
        )
),

versions as (
    select * from all_versions_ranked where version_rank = 1
),

rejected as (
    select distinct record_id, month from canonical.quarantine
    where entity = 'transactions' and month between $month_from and $month_to
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
        select r.customer_id from billing_raw.transactions as r
        where r._month between $month_from and $month_to
    )
),

customers as (
    select customer_id, upper(country) as country from customer_versions where version_rank = 1
)

select
    t.transaction_id,
    t.invoice_id,
    t.customer_id,
    t.subscription_id,
    t.status,
    t.amount_minor,
    upper(t.currency) as currency,
    t.attempt_number,
    t.gateway,
    t.gateway_transaction_id,
    t.gateway_status,
    t.decline_code,
    t.decline_message,
    t.payment_method_type,
    t.payment_method_token,
    t.card_brand,
    t.card_bin,
    t.card_fingerprint,
    t.card_country,
    t.created_at,
    t.updated_at,
    t._month as month,
    c.country as customer_country
from versions as t
left join customers as c on c.customer_id = t.customer_id
where
    not exists (select 1 from rejected as r where r.record_id = t.transaction_id and r.month = t._month)
