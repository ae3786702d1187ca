"""``recovery-pipeline push``: push new/changed canonical rows to the provider now (outside Dagster)
and print the totals next to the provider's own counts."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("push", help="push canonical subscriptions/invoices/transactions to the provider")
    p.add_argument("--provider", default="", help="default: integration.yaml provider.name")
    p.add_argument("--base-url", default=None, help="default: PROVIDER_BASE_URL")
    p.add_argument("--entity", choices=["subscriptions", "invoices", "transactions"], action="append",
                   help="default: all three, in dependency order")
    p.set_defaults(func=run)


def run(args) -> int:
    import duckdb
    import httpx

    from recovery_pipeline.providers.config import options_from_environment
    from recovery_pipeline.providers.push import iter_canonical_duckdb, push_entity

    settings, opts, engine = options_from_environment(args.provider, args.base_url)
    entities = args.entity or ["subscriptions", "invoices", "transactions"]
    dead = 0
    with opts.client() as client, duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        for entity in entities:
            s = push_entity(engine, client, entity, iter_canonical_duckdb(con, entity),
                            opts.push_settings())
            dead += s.dead_letters
            print(f"{entity:>13}: read {s.rows_read}, sent {s.records_sent}, unchanged {s.unchanged}, "
                  f"requests {s.requests}, retries {s.retries}, 429s {s.throttled}, "
                  f"dead letters {s.dead_letters}")
    try:
        totals = httpx.get(f"{opts.base_url.rstrip('/')}/sandbox/counts", timeout=10).json()["totals"]
        print(f"provider holds: {totals}")
    except (httpx.HTTPError, ValueError, KeyError):
        pass  # a real provider has no /sandbox/counts
    return 0 if dead == 0 else 1


def demo_push(console, settings=None, *, provider: str = "slicker", rps: float = 50.0,
              batch_limit: int = 100) -> dict:
    """For ``make demo``: serve the provider sandbox on loopback (in a thread) unless one already
    answers at PROVIDER_BASE_URL, push the canonical history to it, print push totals and the
    provider's counts next to the billing (canonical) counts. Returns the numbers printed."""
    import contextlib
    from urllib.parse import urlparse

    import duckdb
    import httpx
    from rich.table import Table

    from recovery_pipeline.httpserve import serve_in_thread
    from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
    from recovery_pipeline.provider_sandbox import SandboxConfig, create_app
    from recovery_pipeline.providers.config import ProviderOptions
    from recovery_pipeline.providers.push import iter_canonical_duckdb, push_entity
    from recovery_pipeline.settings import SECRET_ENV_VARS, load_settings, secret

    settings = settings or load_settings()
    base = settings.provider_base_url.rstrip("/")
    try:
        running = httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        running = False
    server = contextlib.nullcontext(base) if running else serve_in_thread(
        create_app(SandboxConfig(batch_limit=batch_limit, requests_per_second=rps,
                                 webhook_url=settings.receiver_url, time_scale=0.001)),
        port=urlparse(base).port)
    engine = create_ops_engine(settings.ops_store_url)
    init_ops_store(engine)
    out: dict = {"push": {}, "provider": {}, "billing": {}}
    with server as url:
        opts = ProviderOptions(provider=provider, base_url=url,
                               api_key=secret(SECRET_ENV_VARS["provider_api_key"]) or "",
                               batch_size=batch_limit, requests_per_second=rps)
        push_table = Table(title=f"Push to {provider} (sandbox {url}, {batch_limit} items x {rps:g} req/s)",
                           title_justify="left")
        for col in ("entity", "rows", "sent", "unchanged", "requests", "retries", "429s", "dead letters"):
            push_table.add_column(col, justify="left" if col == "entity" else "right")
        with opts.client() as client, duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
            for entity in ("subscriptions", "invoices", "transactions"):
                s = push_entity(engine, client, entity, iter_canonical_duckdb(con, entity),
                                opts.push_settings())
                out["push"][entity] = s.as_metadata()
                push_table.add_row(entity, *(f"{v:,}" for v in (
                    s.rows_read, s.records_sent, s.unchanged, s.requests, s.retries, s.throttled,
                    s.dead_letters)))
            billing = con.execute(
                "select i.month, count(*), (select count(*) from canonical.transactions t"
                " where t.month = i.month), (select count(*) from canonical.transactions t"
                " where t.month = i.month and t.status = 'failed')"
                " from canonical.invoices i group by i.month order by i.month").fetchall()
        counts = httpx.get(f"{url}/sandbox/counts", timeout=30).json()["months"]
    console.print(push_table)
    parity = Table(title="Provider counts next to billing counts (per month of createdAt)",
                   title_justify="left")
    for col in ("month", "invoices billing", "provider", "transactions billing", "provider",
                "failed billing", "provider"):
        parity.add_column(col, justify="left" if col == "month" else "right")
    for month, inv, txn, failed in billing:
        p = counts.get(month, {})
        out["billing"][month] = {"invoices": inv, "transactions": txn, "failed_transactions": failed}
        out["provider"][month] = {k: p.get(k, 0) for k in ("invoices", "transactions",
                                                           "failed_transactions")}
        parity.add_row(month, f"{inv:,}", f"{p.get('invoices', 0):,}", f"{txn:,}",
                       f"{p.get('transactions', 0):,}", f"{failed:,}",
                       f"{p.get('failed_transactions', 0):,}")
    console.print(parity)
    return out
