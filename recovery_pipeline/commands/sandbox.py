"""``recovery-pipeline sandbox``: serve the provider sandbox (Slicker, Revtain, Butter contracts)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("sandbox", help="serve the provider sandbox (PROVIDERS.md contracts + /sandbox/*)")
    p.add_argument("--port", type=int, default=None, help="default: the port of PROVIDER_BASE_URL (8701)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--provider", default=None,
                   help="informational: the provider the demo talks to (every contract is served)")
    p.add_argument("--webhook-url", default=None,
                   help="receiver base URL (webhooks go to <url>/webhooks/<provider>) or a URL with "
                        "{provider}; default RECEIVER_URL; 'none' disables delivery")
    p.add_argument("--db", default=None, help="SQLite file for what the sandbox holds (default: memory)")
    p.add_argument("--batch-limit", type=int, default=100, help="items per request (Slicker/Butter)")
    p.add_argument("--rps", type=float, default=5.0, help="requests per second per key (Slicker/Butter)")
    p.add_argument("--revtain-per-minute", type=int, default=60)
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="multiplies webhook retry schedules (e.g. 0.001 for demos)")
    p.set_defaults(func=run)


def run(args) -> int:
    from urllib.parse import urlparse

    from recovery_pipeline.httpserve import serve_forever
    from recovery_pipeline.provider_sandbox import SandboxConfig, create_app
    from recovery_pipeline.settings import load_settings

    settings = load_settings()
    port = args.port or urlparse(settings.provider_base_url).port or 8701
    webhook_url = args.webhook_url or settings.receiver_url
    if webhook_url.lower() == "none":
        webhook_url = None
    cfg = SandboxConfig(batch_limit=args.batch_limit, requests_per_second=args.rps,
                        revtain_per_minute=args.revtain_per_minute, webhook_url=webhook_url,
                        db_path=args.db, time_scale=args.time_scale)
    print(f"provider sandbox on http://{args.host}:{port} (batch limit {cfg.batch_limit}, "
          f"{cfg.requests_per_second} req/s; webhooks -> {webhook_url or 'off'})", flush=True)
    serve_forever(create_app(cfg), port=port, host=args.host)
    return 0
