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

    from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
    from recovery_pipeline.providers.config import resolve_options
    from recovery_pipeline.providers.push import iter_canonical_duckdb, push_entity
    from recovery_pipeline.settings import load_settings

    settings = load_settings()
    settings.ensure_dirs()
    opts = resolve_options(base_url=args.base_url or settings.provider_base_url, api_key=None,
                           integration_file=str(settings.integration_file), provider=args.provider)
    engine = create_ops_engine(settings.ops_store_url)
    init_ops_store(engine)
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
