"""``recovery-pipeline receiver``: serve the webhook receiver (verify, store, acknowledge)."""

from __future__ import annotations

import logging

import uvicorn


def register(sub) -> None:
    p = sub.add_parser("receiver", help="serve the provider webhook receiver (POST /webhooks/{provider})")
    p.add_argument("--port", type=int, default=None, help="default: the port of RECEIVER_URL (8703)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workers", type=int, default=1, help="receiver processes sharing the ops store")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=run)


def run(args) -> int:
    from urllib.parse import urlparse

    from recovery_pipeline.settings import load_settings

    settings = load_settings()
    port = args.port or urlparse(settings.receiver_url).port or 8703
    if settings.ops_store_url.startswith("sqlite"):
        settings.ensure_dirs()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run("recovery_pipeline.webhooks.app:app_from_env", factory=True, host=args.host, port=port,
                workers=args.workers, log_level=args.log_level, access_log=False)
    return 0
