-- canonical.quarantine: raw rows the canonical tables reject, one row per (entity, record, reason).
-- reasons: missing_currency, unknown_currency, negative_amount, unknown_state, orphan_invoice,
-- orphan_transaction, future_timestamp, card_number_like, invalid_value (a value that did not parse,
-- or a missing primary key: record_id null, one row for the month's id-less records).
-- only the latest version of a record in its month (by updated_at, then _loaded_at) is judged. row_json never holds a card
-- number: the raw load already masked it (ingest/cardscan.py) and flagged _card_like_columns.
-- parameters: $month_from, $month_to (yyyy-mm, the partition range), $as_of (timestamps after it are "in the future").
with
-- ids seen more than once in a month (an update, a file loaded again): only these get ranked
subs_repeated as (
    select s._month, s.subscription_id
    from billing_raw.subscriptions as s
    where s._month between $month_from and $month_to
    group by s._month, s.subscription_id
    having count(*) > 1
),

subs_versions_ranked as (
    select
        s.*,
        1 as version_rank
    from billing_raw.subscriptions as s
    where
        s._month between $month_from and $month_to
        and not exists (
            select 1 from subs_repeated as k
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
        s._month between $month_from and $month_to
        and exists (
            select 1 from subs_repeated as k
            where k._month = s._month and k.subscription_id is not distinct from s.subscription_id
        )
),

subs as (
    select * from subs_versions_ranked where version_rank = 1
),

-- ids seen more than once in a month (an update, a file loaded again): only these get ranked
inv_repeated as (
    select i._month, i.invoice_id
    from billing_raw.invoices as i
    where i._month between $month_from and $month_to
    group by i._month, i.invoice_id
    having count(*) > 1
),

inv_versions_ranked as (
    select
        i.*,
        1 as version_rank
    from billing_raw.invoices as i
    where
        i._month between $month_from and $month_to
        and not exists (
            select 1 from inv_repeated as k
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
        i._month between $month_from and $month_to
        and exists (
            select 1 from inv_repeated as k
            where k._month = i._month and k.invoice_id is not distinct from i.invoice_id
        )
),

inv as (
    select * from inv_versions_ranked where version_rank = 1
),

-- ids seen more than once in a month (an update, a file loaded again): only these get ranked
tx_repeated as (
    select t._month, t.transaction_id
    from billing_raw.transactions as t
    where t._month between $month_from and $month_to
    group by t._month, t.transaction_id
    having count(*) > 1
),

tx_versions_ranked as (
    select
        t.*,
        1 as version_rank
    from billing_raw.transactions as t
    where
        t._month between $month_from and $month_to
        and not exists (
            select 1 from tx_repeated as k
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
        t._month between $month_from and $month_to
        and exists (
            select 1 from tx_repeated as k
            where k._month = t._month and k.transaction_id is not distinct from t.transaction_id
        )
),

tx as (
    select * from tx_versions_ranked where version_rank = 1
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

subs_flags as (
    select
        s.*,
        (s.currency is null or trim(s.currency) = '') as is_missing_currency,
        (trim(s.currency) <> '' and cur.code is null) as is_unknown_currency,
        (s.amount_minor < 0) as is_negative_amount,
        (st.status is null) as is_unknown_state,
        (s.created_at > $as_of or s.updated_at > $as_of) as is_future,
        (s._card_like_columns is not null) as is_card_like,
        (
            s._invalid_columns is not null or s.created_at is null or s.updated_at is null
            or s.subscription_id is null
        ) as is_invalid
    from subs as s
    left join reference.currencies as cur on cur.code = upper(s.currency)
    left join subscription_states as st on st.status = s.status
),

-- only the (few) rejected rows get a row_json
subs_checked as materialized (
    select
        f.*,
        json_object(
            'subscription_id', f.subscription_id, 'customer_id', f.customer_id,
            'plan_id', f.plan_id, 'status', f.status, 'amount_minor', f.amount_minor,
            'currency', f.currency, 'billing_period', f.billing_period,
            'billing_period_unit', f.billing_period_unit, 'business_entity', f.business_entity,
            'activated_at', f.activated_at, 'canceled_at', f.canceled_at,
            'expires_at', f.expires_at, 'dunning_complete_at', f.dunning_complete_at,
            'created_at', f.created_at, 'updated_at', f.updated_at, '_source', f._source
        ) as row_json
    from subs_flags as f
    where
        f.is_missing_currency or f.is_unknown_currency or f.is_negative_amount
        or f.is_unknown_state or f.is_future or f.is_card_like or f.is_invalid
),

inv_flags as (
    select
        i.*,
        (i.currency is null or trim(i.currency) = '') as is_missing_currency,
        (trim(i.currency) <> '' and cur.code is null) as is_unknown_currency,
        (i.amount_minor < 0) as is_negative_amount,
        (st.status is null) as is_unknown_state,
        case
            when
                i.subscription_id is not null
                and not exists (
                    select 1 from billing_raw.subscriptions as ks
                    where ks.subscription_id = i.subscription_id
                )
                then 'subscription ' || i.subscription_id || ' not found'
            when not exists (
                select 1 from billing_raw.customers as kc where kc.customer_id = i.customer_id
            )
                then 'customer ' || coalesce(i.customer_id, '(null)') || ' not found'
        end as orphan_detail,
        (i.created_at > $as_of or i.updated_at > $as_of or i.paid_at > $as_of) as is_future,
        (i._card_like_columns is not null) as is_card_like,
        (
            i._invalid_columns is not null or i.created_at is null or i.updated_at is null
            or i.invoice_id is null
        ) as is_invalid
    from inv as i
    left join reference.currencies as cur on cur.code = upper(i.currency)
    left join invoice_states as st on st.status = i.status
),

inv_checked as materialized (
    select
        f.*,
        json_object(
            'invoice_id', f.invoice_id, 'customer_id', f.customer_id,
            'subscription_id', f.subscription_id, 'status', f.status,
            'amount_minor', f.amount_minor, 'currency', f.currency,
            'business_entity', f.business_entity, 'attempt_count', f.attempt_count,
            'due_at', f.due_at, 'paid_at', f.paid_at, 'collection_paused', f.collection_paused,
            'dunning_complete_at', f.dunning_complete_at, 'handed_off_at', f.handed_off_at,
            'payment_method_update_requested_at', f.payment_method_update_requested_at,
            'created_at', f.created_at, 'updated_at', f.updated_at, '_source', f._source
        ) as row_json
    from inv_flags as f
    where
        f.is_missing_currency or f.is_unknown_currency or f.is_negative_amount
        or f.is_unknown_state or f.orphan_detail is not null or f.is_future or f.is_card_like
        or f.is_invalid
),

tx_flags as (
    select
        t.*,
        (t.currency is null or trim(t.currency) = '') as is_missing_currency,
        (trim(t.currency) <> '' and cur.code is null) as is_unknown_currency,
        (t.amount_minor < 0) as is_negative_amount,
        (st.status is null) as is_unknown_state,
        not exists (
            select 1 from billing_raw.invoices as ki where ki.invoice_id = t.invoice_id
        ) as is_orphan,
        (t.created_at > $as_of or t.updated_at > $as_of) as is_future,
        (t._card_like_columns is not null) as is_card_like,
        (
            t._invalid_columns is not null or t.created_at is null or t.updated_at is null
            or t.transaction_id is null
        ) as is_invalid
    from tx as t
    left join reference.currencies as cur on cur.code = upper(t.currency)
    left join transaction_states as st on st.status = t.status
),

tx_checked as materialized (
    select
        f.*,
        json_object(
            'transaction_id', f.transaction_id, 'invoice_id', f.invoice_id,
            'customer_id', f.customer_id, 'subscription_id', f.subscription_id,
            'status', f.status, 'amount_minor', f.amount_minor, 'currency', f.currency,
            'attempt_number', f.attempt_number, 'gateway', f.gateway,
            'gateway_transaction_id', f.gateway_transaction_id,
            'gateway_status', f.gateway_status, 'decline_code', f.decline_code,
            'decline_message', f.decline_message, 'payment_method_type', f.payment_method_type,
            'payment_method_token', f.payment_method_token, 'card_brand', f.card_brand,
            'card_bin', f.card_bin, 'card_fingerprint', f.card_fingerprint,
            'card_country', f.card_country, 'created_at', f.created_at,
            'updated_at', f.updated_at, '_source', f._source
        ) as row_json
    from tx_flags as f
    where
        f.is_missing_currency or f.is_unknown_currency or f.is_negative_amount
        or f.is_unknown_state or f.is_orphan or f.is_future or f.is_card_like or f.is_invalid
),

rejections as (
    -- subscriptions
    select 'subscriptions' as entity, subscription_id as record_id, _month as month,
        'missing_currency' as reason, 'currency is empty' as detail, row_json, _loaded_at
    from subs_checked where is_missing_currency
    union all
    select 'subscriptions', subscription_id, _month, 'unknown_currency',
        'currency ' || currency || ' is not ISO-4217', row_json, _loaded_at
    from subs_checked where is_unknown_currency
    union all
    select 'subscriptions', subscription_id, _month, 'negative_amount',
        'amount_minor ' || cast(amount_minor as varchar) || ' < 0', row_json, _loaded_at
    from subs_checked where is_negative_amount
    union all
    select 'subscriptions', subscription_id, _month, 'unknown_state',
        'status ' || coalesce(status, '(null)') || ' is not a subscription state', row_json, _loaded_at
    from subs_checked where is_unknown_state
    union all
    select 'subscriptions', subscription_id, _month, 'future_timestamp',
        'created_at ' || coalesce(cast(created_at as varchar), '(null)') || ', updated_at ' || coalesce(cast(updated_at as varchar), '(null)') || ' (in the future)', row_json, _loaded_at
    from subs_checked where is_future
    union all
    select 'subscriptions', subscription_id, _month, 'card_number_like',
        'card number masked in ' || _card_like_columns, row_json, _loaded_at
    from subs_checked where is_card_like
    union all
    select 'subscriptions', subscription_id, _month, 'invalid_value',
        case
            when subscription_id is null and _invalid_columns is null then 'missing subscription_id'
            else 'unparseable: ' || coalesce(_invalid_columns, 'created_at')
        end, row_json, _loaded_at
    from subs_checked where is_invalid
    -- invoices
    union all
    select 'invoices', invoice_id, _month, 'missing_currency', 'currency is empty', row_json, _loaded_at
    from inv_checked where is_missing_currency
    union all
    select 'invoices', invoice_id, _month, 'unknown_currency',
        'currency ' || currency || ' is not ISO-4217', row_json, _loaded_at
    from inv_checked where is_unknown_currency
    union all
    select 'invoices', invoice_id, _month, 'negative_amount',
        'amount_minor ' || cast(amount_minor as varchar) || ' < 0', row_json, _loaded_at
    from inv_checked where is_negative_amount
    union all
    select 'invoices', invoice_id, _month, 'unknown_state',
        'status ' || coalesce(status, '(null)') || ' is not an invoice state', row_json, _loaded_at
    from inv_checked where is_unknown_state
    union all
    select 'invoices', invoice_id, _month, 'orphan_invoice', orphan_detail, row_json, _loaded_at
    from inv_checked where orphan_detail is not null
    union all
    select 'invoices', invoice_id, _month, 'future_timestamp',
        'created_at/updated_at/paid_at in the future',
        row_json, _loaded_at
    from inv_checked where is_future
    union all
    select 'invoices', invoice_id, _month, 'card_number_like',
        'card number masked in ' || _card_like_columns, row_json, _loaded_at
    from inv_checked where is_card_like
    union all
    select 'invoices', invoice_id, _month, 'invalid_value',
        case
            when invoice_id is null and _invalid_columns is null then 'missing invoice_id'
            else 'unparseable: ' || coalesce(_invalid_columns, 'created_at')
        end, row_json, _loaded_at
    from inv_checked where is_invalid
    -- transactions
    union all
    select 'transactions', transaction_id, _month, 'missing_currency', 'currency is empty', row_json, _loaded_at
    from tx_checked where is_missing_currency
    union all
    select 'transactions', transaction_id, _month, 'unknown_currency',
        'currency ' || currency || ' is not ISO-4217', row_json, _loaded_at
    from tx_checked where is_unknown_currency
    union all
    select 'transactions', transaction_id, _month, 'negative_amount',
        'amount_minor ' || cast(amount_minor as varchar) || ' < 0', row_json, _loaded_at
    from tx_checked where is_negative_amount
    union all
    select 'transactions', transaction_id, _month, 'unknown_state',
        'status ' || coalesce(status, '(null)') || ' is not a transaction state', row_json, _loaded_at
    from tx_checked where is_unknown_state
    union all
    select 'transactions', transaction_id, _month, 'orphan_transaction',
        'invoice ' || coalesce(invoice_id, '(null)') || ' not found', row_json, _loaded_at
    from tx_checked where is_orphan
    union all
    select 'transactions', transaction_id, _month, 'future_timestamp',
        'created_at ' || coalesce(cast(created_at as varchar), '(null)') || ', updated_at ' || coalesce(cast(updated_at as varchar), '(null)') || ' (in the future)', row_json, _loaded_at
    from tx_checked where is_future
    union all
    select 'transactions', transaction_id, _month, 'card_number_like',
        'card number masked in ' || _card_like_columns, row_json, _loaded_at
    from tx_checked where is_card_like
    union all
    select 'transactions', transaction_id, _month, 'invalid_value',
        case
            when transaction_id is null and _invalid_columns is null then 'missing transaction_id'
            else 'unparseable: ' || coalesce(_invalid_columns, 'created_at')
        end, row_json, _loaded_at
    from tx_checked where is_invalid
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
