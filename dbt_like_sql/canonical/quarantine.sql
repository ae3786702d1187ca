-- canonical.quarantine: raw rows the canonical tables reject, one row per (entity, record, reason).
-- reasons: missing_currency, unknown_currency, negative_amount, unknown_state, orphan_invoice,
-- orphan_transaction, future_timestamp, card_number_like, invalid_value (a value that did not parse).
-- only the latest version of a record (by updated_at) is judged. row_json never holds a card
-- number: the raw load already masked it (ingest/cardscan.py) and flagged _card_like_columns.
-- parameters: $month (yyyy-mm, the partition), $as_of (timestamps after it are "in the future").
with
subs_versions as (
    select
        s.*,
        row_number() over (
            partition by s.subscription_id order by s.updated_at desc nulls last, s._loaded_at desc
        ) as version_rank
    from billing_raw.subscriptions as s
    where s._month = $month
),

subs as (
    select * from subs_versions where version_rank = 1
),

inv_versions as (
    select
        i.*,
        row_number() over (
            partition by i.invoice_id order by i.updated_at desc nulls last, i._loaded_at desc
        ) as version_rank
    from billing_raw.invoices as i
    where i._month = $month
),

inv as (
    select * from inv_versions where version_rank = 1
),

tx_versions as (
    select
        t.*,
        row_number() over (
            partition by t.transaction_id order by t.updated_at desc nulls last, t._loaded_at desc
        ) as version_rank
    from billing_raw.transactions as t
    where t._month = $month
),

tx as (
    select * from tx_versions where version_rank = 1
),

known_subscriptions as (
    select distinct subscription_id from billing_raw.subscriptions
),

known_customers as (
    select distinct customer_id from billing_raw.customers
),

known_invoices as (
    select distinct invoice_id from billing_raw.invoices
),

subscription_states as (
    select status from reference.entity_states where entity = 'subscriptions'
),

invoice_states as (
    select status from reference.entity_states where entity = 'invoices'
),

transaction_states as (
    select status from reference.entity_states where entity = 'transactions'
),

subs_checked as (
    select
        s.*,
        cur.code as iso_code,
        st.status as known_status,
        json_object(
            'subscription_id', s.subscription_id, 'customer_id', s.customer_id,
            'plan_id', s.plan_id, 'status', s.status, 'amount_minor', s.amount_minor,
            'currency', s.currency, 'billing_period', s.billing_period,
            'billing_period_unit', s.billing_period_unit, 'business_entity', s.business_entity,
            'activated_at', s.activated_at, 'canceled_at', s.canceled_at,
            'expires_at', s.expires_at, 'dunning_complete_at', s.dunning_complete_at,
            'created_at', s.created_at, 'updated_at', s.updated_at, '_source', s._source
        ) as row_json
    from subs as s
    left join reference.currencies as cur on cur.code = upper(s.currency)
    left join subscription_states as st on st.status = s.status
),

inv_checked as (
    select
        i.*,
        cur.code as iso_code,
        st.status as known_status,
        case
            when i.subscription_id is not null and ks.subscription_id is null
                then 'subscription ' || i.subscription_id || ' not found'
            when kc.customer_id is null then 'customer ' || coalesce(i.customer_id, '(null)') || ' not found'
        end as orphan_detail,
        json_object(
            'invoice_id', i.invoice_id, 'customer_id', i.customer_id,
            'subscription_id', i.subscription_id, 'status', i.status,
            'amount_minor', i.amount_minor, 'currency', i.currency,
            'business_entity', i.business_entity, 'attempt_count', i.attempt_count,
            'due_at', i.due_at, 'paid_at', i.paid_at, 'collection_paused', i.collection_paused,
            'dunning_complete_at', i.dunning_complete_at, 'handed_off_at', i.handed_off_at,
            'payment_method_update_requested_at', i.payment_method_update_requested_at,
            'created_at', i.created_at, 'updated_at', i.updated_at, '_source', i._source
        ) as row_json
    from inv as i
    left join reference.currencies as cur on cur.code = upper(i.currency)
    left join invoice_states as st on st.status = i.status
    left join known_subscriptions as ks on ks.subscription_id = i.subscription_id
    left join known_customers as kc on kc.customer_id = i.customer_id
),

tx_checked as (
    select
        t.*,
        cur.code as iso_code,
        st.status as known_status,
        ki.invoice_id as known_invoice_id,
        json_object(
            'transaction_id', t.transaction_id, 'invoice_id', t.invoice_id,
            'customer_id', t.customer_id, 'subscription_id', t.subscription_id,
            'status', t.status, 'amount_minor', t.amount_minor, 'currency', t.currency,
            'attempt_number', t.attempt_number, 'gateway', t.gateway,
            'gateway_transaction_id', t.gateway_transaction_id,
            'gateway_status', t.gateway_status, 'decline_code', t.decline_code,
            'decline_message', t.decline_message, 'payment_method_type', t.payment_method_type,
            'payment_method_token', t.payment_method_token, 'card_brand', t.card_brand,
            'card_bin', t.card_bin, 'card_fingerprint', t.card_fingerprint,
            'card_country', t.card_country, 'created_at', t.created_at,
            'updated_at', t.updated_at, '_source', t._source
        ) as row_json
    from tx as t
    left join reference.currencies as cur on cur.code = upper(t.currency)
    left join transaction_states as st on st.status = t.status
    left join known_invoices as ki on ki.invoice_id = t.invoice_id
),

rejections as (
    -- subscriptions
    select 'subscriptions' as entity, subscription_id as record_id, _month as month,
        'missing_currency' as reason, 'currency is empty' as detail, row_json, _loaded_at
    from subs_checked where currency is null or trim(currency) = ''
    union all
    select 'subscriptions', subscription_id, _month, 'unknown_currency',
        'currency ' || currency || ' is not ISO-4217', row_json, _loaded_at
    from subs_checked where trim(currency) <> '' and iso_code is null
    union all
    select 'subscriptions', subscription_id, _month, 'negative_amount',
        'amount_minor ' || cast(amount_minor as varchar) || ' < 0', row_json, _loaded_at
    from subs_checked where amount_minor < 0
    union all
    select 'subscriptions', subscription_id, _month, 'unknown_state',
        'status ' || coalesce(status, '(null)') || ' is not a subscription state', row_json, _loaded_at
    from subs_checked where known_status is null
    union all
    select 'subscriptions', subscription_id, _month, 'future_timestamp',
        'created_at ' || cast(created_at as varchar) || ', updated_at ' || cast(updated_at as varchar) || ' (in the future)', row_json, _loaded_at
    from subs_checked where created_at > $as_of or updated_at > $as_of
    union all
    select 'subscriptions', subscription_id, _month, 'card_number_like',
        'card number masked in ' || _card_like_columns, row_json, _loaded_at
    from subs_checked where _card_like_columns is not null
    union all
    select 'subscriptions', subscription_id, _month, 'invalid_value',
        'unparseable: ' || coalesce(_invalid_columns, 'created_at'), row_json, _loaded_at
    from subs_checked where _invalid_columns is not null or created_at is null or updated_at is null
    -- invoices
    union all
    select 'invoices', invoice_id, _month, 'missing_currency', 'currency is empty', row_json, _loaded_at
    from inv_checked where currency is null or trim(currency) = ''
    union all
    select 'invoices', invoice_id, _month, 'unknown_currency',
        'currency ' || currency || ' is not ISO-4217', row_json, _loaded_at
    from inv_checked where trim(currency) <> '' and iso_code is null
    union all
    select 'invoices', invoice_id, _month, 'negative_amount',
        'amount_minor ' || cast(amount_minor as varchar) || ' < 0', row_json, _loaded_at
    from inv_checked where amount_minor < 0
    union all
    select 'invoices', invoice_id, _month, 'unknown_state',
        'status ' || coalesce(status, '(null)') || ' is not an invoice state', row_json, _loaded_at
    from inv_checked where known_status is null
    union all
    select 'invoices', invoice_id, _month, 'orphan_invoice', orphan_detail, row_json, _loaded_at
    from inv_checked where orphan_detail is not null
    union all
    select 'invoices', invoice_id, _month, 'future_timestamp',
        'created_at/updated_at/paid_at in the future',
        row_json, _loaded_at
    from inv_checked where created_at > $as_of or updated_at > $as_of or paid_at > $as_of
    union all
    select 'invoices', invoice_id, _month, 'card_number_like',
        'card number masked in ' || _card_like_columns, row_json, _loaded_at
    from inv_checked where _card_like_columns is not null
    union all
    select 'invoices', invoice_id, _month, 'invalid_value',
        'unparseable: ' || coalesce(_invalid_columns, 'created_at'), row_json, _loaded_at
    from inv_checked where _invalid_columns is not null or created_at is null or updated_at is null
    -- transactions
    union all
    select 'transactions', transaction_id, _month, 'missing_currency', 'currency is empty', row_json, _loaded_at
    from tx_checked where currency is null or trim(currency) = ''
    union all
    select 'transactions', transaction_id, _month, 'unknown_currency',
        'currency ' || currency || ' is not ISO-4217', row_json, _loaded_at
    from tx_checked where trim(currency) <> '' and iso_code is null
    union all
    select 'transactions', transaction_id, _month, 'negative_amount',
        'amount_minor ' || cast(amount_minor as varchar) || ' < 0', row_json, _loaded_at
    from tx_checked where amount_minor < 0
    union all
    select 'transactions', transaction_id, _month, 'unknown_state',
        'status ' || coalesce(status, '(null)') || ' is not a transaction state', row_json, _loaded_at
    from tx_checked where known_status is null
    union all
    select 'transactions', transaction_id, _month, 'orphan_transaction',
        'invoice ' || coalesce(invoice_id, '(null)') || ' not found', row_json, _loaded_at
    from tx_checked where known_invoice_id is null
    union all
    select 'transactions', transaction_id, _month, 'future_timestamp',
        'created_at ' || cast(created_at as varchar) || ', updated_at ' || cast(updated_at as varchar) || ' (in the future)', row_json, _loaded_at
    from tx_checked where created_at > $as_of or updated_at > $as_of
    union all
    select 'transactions', transaction_id, _month, 'card_number_like',
        'card number masked in ' || _card_like_columns, row_json, _loaded_at
    from tx_checked where _card_like_columns is not null
    union all
    select 'transactions', transaction_id, _month, 'invalid_value',
        'unparseable: ' || coalesce(_invalid_columns, 'created_at'), row_json, _loaded_at
    from tx_checked where _invalid_columns is not null or created_at is null or updated_at is null
)

select
    entity,
    record_id,
    month,
    reason,
    detail,
    cast(row_json as varchar) as row_json,
    _loaded_at as quarantined_at
from rejections
