"""``recovery-pipeline redrive``: replay dead letters (oldest first; subscriptions, invoices,
transactions, then hand-offs). Safe to run twice: a replayed row is flipped with a guarded UPDATE."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("redrive", help="replay dead-lettered pushes and hand-offs to the provider")
    p.add_argument("--provider", default="", help="default: integration.yaml provider.name")
    p.add_argument("--base-url", default=None, help="default: PROVIDER_BASE_URL")
    p.set_defaults(func=run)


def run(args) -> int:
    from recovery_pipeline.providers.config import options_from_environment
    from recovery_pipeline.providers.handoff import execute_one
    from recovery_pipeline.providers.push import redrive

    _, opts, engine = options_from_environment(args.provider, args.base_url)
    with opts.client() as client:
        def rehandoff(body: dict) -> bool:
            meta = body.get("metadata") or {}
            txn = {"invoice_id": meta.get("invoiceId") or body["idempotencyKey"],
                   "transaction_id": meta.get("transactionId") or "", "customer_id": meta.get(
                       "customerId"), "payment_method_token": body.get("paymentMethodToken"),
                   "amount_minor": body["amount"], "currency": body.get("currency"),
                   "decline_code": body.get("originalDeclineCode"), "card_bin": body.get("binPrefix")}
            return execute_one(engine, client, txn, max_receive_count=opts.max_receive_count) in (
                "accepted", "queued", "duplicate", "blocked")

        stats = redrive(engine, client, handoff=rehandoff)
    print(f"redrive {opts.provider}: considered {stats.considered}, redriven {stats.redriven} "
          f"({stats.records} records), still dead {stats.still_dead}, skipped {stats.skipped}")
    return 0 if stats.still_dead == 0 else 1
