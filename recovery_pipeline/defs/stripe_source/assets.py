"""The Stripe object store: Stripe events (webhook receiver or file replay) applied, out-of-order safe."""

import dagster as dg

from recovery_pipeline.resources import OpsStoreResource

STRIPE_EVENT_STORE = dg.AssetKey(["stripe", "event_store"])


@dg.asset(
    key=STRIPE_EVENT_STORE,
    group_name="billing_exports",
    kinds={"stripe", "sqlalchemy"},
    description=(
        "Latest known state of every Stripe customer, subscription, invoice, charge and invoice payment "
        "attempt, from the Stripe events the webhook receiver stored (or that were replayed from files). "
        "An older event never overwrites a newer state. The rows it implies load into billing_raw "
        "through stripe_connector.raw_load when the integration's source is Stripe."
    ),
)
def stripe_event_store(context: dg.AssetExecutionContext, ops_store: OpsStoreResource) -> dg.MaterializeResult:
    """Apply the receiver's pending Stripe events to the object store and report what the store maps to:
    how many events were applied, skipped (type not used, with the reason) or rejected (malformed)."""
    from collections import Counter

    from recovery_pipeline.stripe_connector.store import event_span, object_counts, process_inbox, recent_invoices

    engine = ops_store.engine()
    results = []
    while batch := process_inbox(engine):
        results.extend(batch)
    counts = Counter(r.status for r in results)
    skipped = Counter(r.reason for r in results if r.status in ("skipped", "rejected"))
    held = object_counts(engine)
    first, last, n_objects = event_span(engine)
    if counts["rejected"]:
        context.log.warning(f"{counts['rejected']} Stripe event(s) rejected "
                            "(malformed or card-like; kept in the inbox)")
    preview = "\n".join(["| invoice | status | attempts | amount | currency |", "|---|---|---|---|---|"] + [
        f"| {r['invoice_id']} | {r['status']} | {r['attempt_count']} | {r['amount_minor']} | {r['currency']} |"
        for r in recent_invoices(engine, 5)])
    return dg.MaterializeResult(metadata={
        "events_applied_this_run": dg.MetadataValue.int(counts["stored"]),
        "events_skipped_this_run": dg.MetadataValue.int(counts["skipped"]),
        "events_rejected_this_run": dg.MetadataValue.int(counts["rejected"]),
        "skip_reasons": dg.MetadataValue.json(dict(skipped.most_common(10))),
        "objects_by_type": dg.MetadataValue.json(held),
        "objects_in_store": dg.MetadataValue.int(n_objects),
        "oldest_version_event_at": first.isoformat() if first else "none",
        "newest_version_event_at": last.isoformat() if last else "none",
        "dagster/row_count": dg.MetadataValue.int(n_objects),
        "preview": dg.MetadataValue.md(preview),
    })
