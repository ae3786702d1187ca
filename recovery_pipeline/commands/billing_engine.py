"""``recovery-pipeline billing-engine``: serve the demo billing engine's HTTP API."""

from __future__ import annotations

from urllib.parse import urlparse

from recovery_pipeline.settings import load_settings


def register(sub) -> None:
    p = sub.add_parser("billing-engine", help="serve the demo billing engine HTTP API")
    p.add_argument("--port", type=int, default=None, help="default: port of BILLING_ENGINE_URL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--db-url", default=None, help="billing database URL (default: settings)")
    p.set_defaults(func=run)


def run(args) -> int:
    from recovery_pipeline.billing_engine.app import create_app
    from recovery_pipeline.billing_engine.engine import BillingEngine
    from recovery_pipeline.httpserve import serve_forever

    settings = load_settings()
    settings.ensure_dirs()
    port = args.port or urlparse(settings.billing_engine_url).port or 8702
    billing = BillingEngine.from_url(args.db_url or settings.billing_db_url)
    serve_forever(create_app(billing), port=port, host=args.host)
    return 0
