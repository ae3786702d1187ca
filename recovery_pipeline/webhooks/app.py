"""The webhook receiver: an ASGI app (Starlette) that verifies, stores and acknowledges.

``POST /webhooks/{provider}`` for slicker, revtain, butter, standard, stripe (each enabled when its
secret is configured). Per request, in this order:

1. JSON content type, else 415; declared or streamed size above the limit, else 413 (enforced
   while streaming: an oversized body is never read whole);
2. the raw delivery goes to the group-commit writer (:mod:`recovery_pipeline.webhooks.writers`),
   which runs :func:`recovery_pipeline.webhooks.inbox.admit` on it: verification of the raw bytes
   with :mod:`recovery_pipeline.webhooks.signing` (401) - nothing is parsed before the signature
   holds -, then the event id and type per provider (400), then redaction;
3. the writer stores the row (raw body + redacted headers) durably, deduplicated on (provider,
   event id), and answers; 200 ``{success, message, duplicate, event_id}`` once it is on disk,
   503 when the store is unavailable (the provider retries; nothing unstored is ever acknowledged).

By default the writer is a child process, so this event loop only does HTTP and hands off.
Unknown event types are stored and acknowledged. Every rejection is logged (no secrets) and
recorded in ``webhook_rejections``. Nothing is executed here: processing reads the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import orjson

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recovery_pipeline import settings as settings_mod
from recovery_pipeline.opsstore.store import create_ops_engine, init_ops_store
from recovery_pipeline.webhooks import redact, signing
from recovery_pipeline.webhooks.inbox import MAX_BATCH, StoreUnavailable, WebhookAuth, rejection_row
from recovery_pipeline.webhooks.writers import make_writer

log = logging.getLogger("recovery_pipeline.webhooks")

DEFAULT_MAX_BODY = 256 * 1024
# With the writer THREAD (writer="thread"), the dedicated receiver process (the uvicorn factory,
# app_from_env) hands the GIL to that thread after 0.1 ms instead of CPython's 5 ms: it re-takes
# the GIL after every SQLite step while the event loop is busy, and each wait lengthens the commit
# every pending acknowledgement is waiting for. The default writer PROCESS shares no GIL with the
# loop and needs none of this. RECEIVER_SWITCH_INTERVAL overrides it (0 = CPython's default).
DEFAULT_SWITCH_INTERVAL_S = 0.0001
SECRET_NAMES = {
    "slicker": "slicker_webhook_token",
    "revtain": "revtain_webhook_secret",
    "butter": "butter_webhook_secret",
    "standard": "standard_webhook_secret",
    "stripe": "stripe_webhook_secret",
}


@dataclass(frozen=True)
class ReceiverConfig:
    ops_store_url: str
    # provider -> signing secret (Slicker: bearer token). Never logged (repr=False).
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    slicker_basic: str | None = field(default=None, repr=False)  # "user:password"
    max_body_bytes: int = DEFAULT_MAX_BODY
    commit_timeout_s: float = 8.0  # Revtain wants an answer within 10 s
    # bench only: POST /echo (a plain Starlette route) and POST /echo-asgi (the receiver's raw
    # ASGI dispatch) answer 200 without verifying or storing
    echo: bool = False
    switch_interval_s: float | None = None  # sys.setswitchinterval for the receiver process
    max_batch: int = MAX_BATCH  # rows per group commit (1 = a commit per event: the bench's naive baseline)
    writer: str = "process"  # where commits run: "process" (a child process) or "thread"
    freeze_gc: bool = False  # gc.freeze() after startup (the dedicated receiver process only)

    def __post_init__(self):
        if self.writer not in ("process", "thread"):
            raise ValueError(f"RECEIVER_WRITER must be 'process' or 'thread', not {self.writer!r}")

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(p for p in signing.PROVIDERS
                     if self.secrets.get(p) or (p == "slicker" and self.slicker_basic))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ReceiverConfig:
        env = os.environ if env is None else env
        s = settings_mod.load_settings(env)
        secrets = {}
        for provider, name in SECRET_NAMES.items():
            value = settings_mod.secret(settings_mod.SECRET_ENV_VARS[name], env)
            if value:
                secrets[provider] = value
        return cls(
            ops_store_url=env.get("RECEIVER_OPS_STORE_URL") or s.ops_store_url,
            secrets=secrets,
            slicker_basic=settings_mod.secret(settings_mod.SECRET_ENV_VARS["slicker_webhook_basic"], env),
            max_body_bytes=int(env.get("RECEIVER_MAX_BODY_BYTES") or DEFAULT_MAX_BODY),
            echo=env.get("RECEIVER_BENCH_ECHO") == "1",
            switch_interval_s=float(env.get("RECEIVER_SWITCH_INTERVAL") or 0) or None,
            max_batch=int(env.get("RECEIVER_MAX_BATCH") or MAX_BATCH),
            writer=(env.get("RECEIVER_WRITER") or "process").strip().lower(),
        )


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _check_declared(declared: str | None, limit: int) -> None:
    """413 before reading when the declared Content-Length is over ``limit`` (an unparsable one
    is left to the streamed count)."""
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _TooLarge
        except ValueError:
            pass


async def _read_body(request: Request, limit: int) -> bytes:
    _check_declared(request.headers.get("content-length"), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


async def _read_asgi_body(receive, declared: str | None, limit: int) -> bytes:
    """The body straight from ASGI ``receive`` (the hot path: no Starlette Request), same limits."""
    _check_declared(declared, limit)
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                body = chunk if not body else body + chunk
                if len(body) > limit:
                    raise _TooLarge
            if not message.get("more_body", False):
                return body
        elif message["type"] == "http.disconnect":
            raise _Disconnected


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _json_bytes(doc: dict) -> bytes:
    # the same compact UTF-8 rendering as starlette's JSONResponse
    return orjson.dumps(doc)


def _ack(message: str, duplicate: bool, event_id: str) -> bytes:
    return _json_bytes({"success": True, "message": message, "duplicate": duplicate, "event_id": event_id})


_JSON_CT = (b"content-type", b"application/json")


async def _send(send, status: int, payload: bytes, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [_JSON_CT, (b"content-length", str(len(payload)).encode()), *extra]})
    await send({"type": "http.response.body", "body": payload})


def _fast_route(scope) -> str | None:
    """``provider`` when the request is ``POST /webhooks/{provider}`` (one path segment, as the
    Starlette route would match), ``"/echo-asgi"`` for ``POST /echo-asgi``, else None (Starlette
    serves it)."""
    if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("root_path"):
        return None
    path = scope["path"]
    if path.startswith("/webhooks/"):
        provider = path[10:]
        if provider and "/" not in provider:
            return provider
        return None
    if path == "/echo-asgi":
        return "/echo-asgi"
    return None


class _ReceiverApp(Starlette):
    """Starlette for everything, except the hot route (``POST /webhooks/{provider}``, and the
    bench's ``POST /echo-asgi``: an echo paying the receiver's own dispatch cost), which is served
    as plain ASGI: no middleware stack, router, Request or Response objects per delivery."""

    def __init__(self, *, fast_receive, fast_echo, **kwargs):
        super().__init__(**kwargs)
        self._fast_receive = fast_receive
        self._fast_echo = fast_echo

    async def __call__(self, scope, receive, send) -> None:
        route = _fast_route(scope)
        if route is not None:
            if route == "/echo-asgi":
                if self._fast_echo is not None:
                    return await self._fast_echo(scope, receive, send)
            else:
                return await self._fast_receive(route, scope, receive, send)
        await super().__call__(scope, receive, send)


def create_app(config: ReceiverConfig | None = None) -> Starlette:
    """Build the receiver app (no I/O until startup: the store is opened in the lifespan)."""
    cfg = config or ReceiverConfig.from_env()
    enabled = cfg.enabled
    state: dict = {}

    async def rejection(provider: str, status: int, reason: str) -> tuple[int, bytes, tuple]:
        provider = provider[:32].encode("unicode_escape").decode("ascii")  # path text: no log injection
        provider = redact.mask_card_numbers_in_text(provider)
        log.warning("webhook rejected provider=%s status=%d reason=%s", provider[:32], status, reason)
        writer = state.get("writer")
        if writer is not None:
            try:  # (the writer fails a commit that takes longer than commit_timeout_s)
                await writer.record_rejection(rejection_row(provider, status, reason))
            except StoreUnavailable:
                log.error("could not record webhook rejection (store unavailable)")
        return status, _json_bytes({"success": False, "message": reason}), ()

    async def handle(provider: str, headers: dict[str, str], content_type: str, read_body
                     ) -> tuple[int, bytes, tuple]:
        """The whole per-delivery contract; returns (status, JSON body, extra headers)."""
        if provider not in enabled:
            return await rejection(provider, 404, "unknown or disabled provider")
        if not _is_json(content_type):
            return await rejection(provider, 415, "content type must be application/json")
        try:
            body = await read_body()
        except _TooLarge:
            return await rejection(provider, 413, f"body larger than {cfg.max_body_bytes} bytes")
        writer = state.get("writer")
        try:
            if writer is None:  # served without the lifespan: no store, so no acknowledgement
                raise StoreUnavailable("inbox writer is not running")
            # the writer verifies the raw bytes, then parses, then stores (inbox.admit); it answers
            # within commit_timeout_s (its sweep fails slower batches)
            outcome = await writer.deliver(provider, headers, body)
        except StoreUnavailable as exc:
            outcome = ["unavailable", type(exc).__name__]
        kind = outcome[0]
        if kind == "stored":
            event_id = outcome[2]
            if outcome[1]:
                return 200, _ack("stored", False, event_id), ()
            return 200, _ack("duplicate: already stored", True, event_id), ()
        if kind == "rejected":  # (recorded in webhook_rejections by the writer)
            log.warning("webhook rejected provider=%s status=%d reason=%s", provider, outcome[1], outcome[2])
            return outcome[1], _json_bytes({"success": False, "message": outcome[2]}), ()
        log.error("webhook not stored provider=%s: %s", provider, outcome[1])
        return (503, _json_bytes({"success": False, "message": "store unavailable, retry later"}),
                ((b"retry-after", b"5"),))

    async def receive(request: Request) -> Response:  # Starlette route (when not on the fast path)
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, payload, extra = await handle(
            request.path_params["provider"], headers, request.headers.get("content-type", ""),
            lambda: _read_body(request, cfg.max_body_bytes))
        return Response(payload, status_code=status, media_type="application/json",
                        headers={k.decode(): v.decode() for k, v in extra})

    async def fast_receive(provider: str, scope, receive_msg, send) -> None:
        headers: dict[str, str] = {}
        content_type = declared = None
        for k, v in scope["headers"]:
            name, value = k.decode("latin-1").lower(), v.decode("latin-1")
            headers[name] = value  # the last of repeated names, as before
            if name == "content-type" and content_type is None:
                content_type = value
            elif name == "content-length" and declared is None:
                declared = value
        try:
            status, payload, extra = await handle(
                provider, headers, content_type or "",
                lambda: _read_asgi_body(receive_msg, declared, cfg.max_body_bytes))
        except _Disconnected:
            return
        await _send(send, status, payload, extra)

    async def echo(request: Request) -> Response:
        body = await _read_body(request, cfg.max_body_bytes)
        return Response(json.dumps({"success": True, "message": "echo", "bytes": len(body)}),
                        media_type="application/json")

    async def fast_echo(scope, receive_msg, send) -> None:
        declared = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"content-length"),
                        None)
        try:
            body = await _read_asgi_body(receive_msg, declared, cfg.max_body_bytes)
        except _Disconnected:
            return
        await _send(send, 200, _json_bytes({"success": True, "message": "echo", "bytes": len(body)}))

    async def healthz(request: Request) -> Response:
        writer = state.get("writer")
        ok = writer is not None and writer.alive
        doc = {"status": "ok" if ok else "degraded", "providers": list(enabled)}
        if writer is not None:
            doc["writer"] = writer.stats()
        return JSONResponse(doc, status_code=200 if ok else 503)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document(enabled))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if "stripe" in enabled:
            import stripe  # noqa: F401 - warm the import before the first delivery
        if cfg.switch_interval_s and cfg.writer == "thread":
            # The writer thread re-takes the GIL after each SQLite step (and after the fsync);
            # a busy event loop would hold it for the default 5 ms each time.
            sys.setswitchinterval(cfg.switch_interval_s)
        engine = create_ops_engine(cfg.ops_store_url, durable=True)
        for attempt in range(5):  # several receiver processes may create the tables at once
            try:
                init_ops_store(engine)
                break
            except Exception:  # noqa: BLE001
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))
        auth = WebhookAuth(secrets={p: v for p, v in cfg.secrets.items() if p in enabled},
                           slicker_basic=cfg.slicker_basic)
        writer = make_writer(cfg.ops_store_url, engine, auth, cfg.writer, max_batch=cfg.max_batch,
                             commit_timeout_s=cfg.commit_timeout_s)
        await writer.start()
        if cfg.freeze_gc:
            # its own process: everything imported and built so far lives as long as the process;
            # keep it out of the cyclic GC's passes (requests allocate enough to trigger them often)
            gc.collect()
            gc.freeze()
        state["writer"], state["engine"] = writer, engine
        log.info("webhook receiver ready; providers=%s", ",".join(enabled))
        try:
            yield
        finally:
            await writer.stop()
            engine.dispose()
            state.clear()

    routes = [
        Route("/webhooks/{provider}", receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    if cfg.echo:
        routes.append(Route("/echo", echo, methods=["POST"]))
    return _ReceiverApp(routes=routes, lifespan=lifespan, fast_receive=fast_receive,
                        fast_echo=fast_echo if cfg.echo else None)


def app_from_env() -> Starlette:
    """uvicorn factory (``--factory recovery_pipeline.webhooks.app:app_from_env``)."""
    cfg = ReceiverConfig.from_env()
    if not (os.environ.get("RECEIVER_SWITCH_INTERVAL") or "").strip():
        # its own process: a short GIL switch interval for the commit thread (see above)
        cfg = dataclasses.replace(cfg, switch_interval_s=DEFAULT_SWITCH_INTERVAL_S)
    return create_app(dataclasses.replace(cfg, freeze_gc=True))


def openapi_document(providers: tuple[str, ...] = signing.PROVIDERS) -> dict:
    """An accurate OpenAPI 3.0 description of the receiver (for clients and schemathesis)."""
    error = {"$ref": "#/components/schemas/Error"}

    def resp(desc: str, schema: dict = error) -> dict:
        return {"description": desc, "content": {"application/json": {"schema": schema}}}

    header_params = [
        ("Authorization", "Slicker: Bearer token or Basic credentials"),
        ("X-Revtain-Signature", "Revtain: hex HMAC-SHA256 of the raw body"),
        ("X-Revtain-Event-Id", "Revtain: delivery event id (used when the body has no id)"),
        ("X-Butter-Webhook-Signature", "Butter: hex HMAC-SHA256 of '{body}+{expiration}'"),
        ("X-Butter-Webhook-Expires", "Butter: expiry, unix seconds"),
        ("X-Butter-Webhook-Expiration", "Butter: expiry, unix seconds (alternate name)"),
        ("X-Butter-Webhook-Type", "Butter: event type"),
        ("X-Butter-Webhook-Deduplication-ID", "Butter: event id"),
        ("webhook-id", "Standard Webhooks: message id"),
        ("webhook-timestamp", "Standard Webhooks: unix seconds"),
        ("webhook-signature", "Standard Webhooks: space-separated v1,<base64> signatures"),
        ("Stripe-Signature", "Stripe: t=<unix>,v1=<hex>[,v1=<hex>]"),
    ]
    return {
        "openapi": "3.0.3",
        "info": {"title": "recovery_pipeline webhook receiver", "version": "1.0.0",
                 "description": "Verifies provider webhooks, stores them durably (deduplicated by "
                                "provider and event id) and acknowledges. Nothing is executed here."},
        "paths": {
            "/webhooks/{provider}": {
                "post": {
                    "operationId": "receiveWebhook",
                    "summary": "Verify, store and acknowledge one provider webhook delivery",
                    "parameters": [
                        {"name": "provider", "in": "path", "required": True,
                         "schema": {"type": "string", "enum": list(providers)}},
                        *({"name": n, "in": "header", "required": False, "description": d,
                           "schema": {"type": "string"}} for n, d in header_params),
                    ],
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": {"type": "object", "additionalProperties": True}}}},
                    "responses": {
                        "200": resp("Stored now, or already stored (duplicate: true)",
                                    {"$ref": "#/components/schemas/Ack"}),
                        "400": resp("Verified but malformed JSON, not an object, or no event id"),
                        "401": resp("Missing or invalid signature/credentials, or stale timestamp"),
                        "404": resp("Unknown or disabled provider"),
                        "413": resp("Body larger than the limit"),
                        "415": resp("Content type is not JSON"),
                        "503": resp("Store unavailable: not stored, retry later"),
                    },
                }
            },
            "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness of the receiver and its writer",
                                 "responses": {
                                     "200": resp("Ready", {"$ref": "#/components/schemas/Health"}),
                                     "503": resp("Writer not running", {"$ref": "#/components/schemas/Health"})}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                      "responses": {"200": resp("OpenAPI document", {"type": "object"})}}},
        },
        "components": {"schemas": {
            "Ack": {"type": "object", "required": ["success", "message", "duplicate", "event_id"],
                    "properties": {"success": {"type": "boolean", "enum": [True]},
                                   "message": {"type": "string"}, "duplicate": {"type": "boolean"},
                                   "event_id": {"type": "string"}}},
            "Error": {"type": "object", "required": ["success", "message"],
                      "properties": {"success": {"type": "boolean", "enum": [False]},
                                     "message": {"type": "string"}}},
            "Health": {"type": "object", "required": ["status", "providers"],
                       "properties": {"status": {"type": "string", "enum": ["ok", "degraded"]},
                                      "providers": {"type": "array", "items": {"type": "string"}},
                                      "writer": {"type": "object", "properties": {
                                          "kind": {"type": "string", "enum": ["process", "thread"]},
                                          "pid": {"type": "integer", "nullable": True},
                                          "batches": {"type": "integer"}, "items": {"type": "integer"},
                                          "rows": {"type": "integer"}, "commit_seconds": {"type": "number"}}}}},
        }},
    }
