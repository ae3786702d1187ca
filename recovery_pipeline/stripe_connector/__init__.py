"""Stripe as the billing source: event mapping, an out-of-order-safe object store, the Stripe API
dlt source, Stripe-shaped event emission for the demo, and the launch checks of the Stripe path.

Pure code (no Dagster): ``mapping`` (Stripe objects/events -> billing export rows), ``models``
(the ``stripe_objects`` ops-store table), ``store`` (apply events, build rows), ``files`` (event
files), ``api_source`` (dlt source over the Stripe API), ``events_source`` (dlt source over the
store), ``raw_load`` (both into ``billing_raw``), ``emit`` (billing DB -> Stripe-shaped events),
``launch_checks`` (``stripe-check``). Dagster definitions: ``recovery_pipeline/defs/stripe_source``.
"""
