"""HTTP API of the demo billing engine (the contract in ARCHITECTURE.md).

``X-API-Key`` on every route but ``/healthz``; every POST action needs an ``Idempotency-Key``
header (a repeated key returns the first response and does not act again). Errors are JSON
``{"error": {"code", "message"}}`` with 401 / 404 / 409 / 422.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from recovery_pipeline.billing_engine.engine import BillingEngine, BillingError, InvalidRequest
from recovery_pipeline.settings import SECRET_ENV_VARS, load_settings, secret


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(billing: BillingEngine | None = None, *, db_url: str | None = None,
               api_key: str | None = None) -> Starlette:
    """Build the app over ``billing`` (or a BillingEngine on ``db_url`` / the settings' URL).

    The engine is created lazily on first request, so building the app touches nothing.
    """
    key_value = api_key
    state: dict[str, BillingEngine] = {}
    if billing is not None:
        state["engine"] = billing

    def engine() -> BillingEngine:
        if "engine" not in state:
            state["engine"] = BillingEngine.from_url(db_url or load_settings().billing_db_url)
        return state["engine"]

    def expected_key() -> str | None:
        return key_value if key_value is not None else secret(SECRET_ENV_VARS["billing_engine_api_key"])

    def authorized(request: Request) -> bool:
        given = request.headers.get("x-api-key")
        expected = expected_key()
        return bool(given) and bool(expected) and hmac.compare_digest(given.encode(), expected.encode())

    async def call(request: Request, fn: Callable[[], dict]) -> JSONResponse:
        if not authorized(request):
            return _error(401, "unauthorized", "missing or invalid X-API-Key header")
        try:
            result = await asyncio.to_thread(fn)
        except BillingError as exc:
            return _error(exc.status_code, exc.code, str(exc))
        return JSONResponse(result)

    async def body(request: Request) -> dict:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not valid JSON: {exc.msg}") from exc
        if not isinstance(data, dict):
            raise InvalidRequest("request body must be a JSON object")
        return data

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def get_invoice(request: Request) -> JSONResponse:
        iid = request.path_params["invoice_id"]
        return await call(request, lambda: engine().get_invoice(iid))

    def action(name: str, with_body: Callable[[BillingEngine, str, str | None, dict], dict]):
        async def endpoint(request: Request) -> JSONResponse:
            if not authorized(request):
                return _error(401, "unauthorized", "missing or invalid X-API-Key header")
            iid = request.path_params["invoice_id"]
            key = request.headers.get("idempotency-key")
            try:
                data = await body(request)
            except InvalidRequest as exc:
                return _error(422, exc.code, str(exc))
            return await call(request, lambda: with_body(engine(), iid, key, data))
        endpoint.__name__ = name
        return endpoint

    def _url(data: dict) -> str | None:
        url = data.get("card_update_url")
        if url is not None and not isinstance(url, str):
            raise InvalidRequest("card_update_url must be a string")
        return url

    routes = [
        Route("/healthz", healthz),
        Route("/invoices/{invoice_id}", get_invoice),
        Route("/invoices/{invoice_id}/retry", action(
            "retry", lambda e, i, k, d: e.retry_invoice(i, k)), methods=["POST"]),
        Route("/invoices/{invoice_id}/request-payment-method-update", action(
            "request_payment_method_update",
            lambda e, i, k, d: e.request_payment_method_update(i, k, card_update_url=_url(d))),
            methods=["POST"]),
        Route("/invoices/{invoice_id}/pause-collection", action(
            "pause_collection", lambda e, i, k, d: e.pause_collection(i, k)), methods=["POST"]),
        Route("/invoices/{invoice_id}/complete-dunning", action(
            "complete_dunning", lambda e, i, k, d: e.complete_dunning(i, k)), methods=["POST"]),
        Route("/invoices/{invoice_id}/mark-paid", action(
            "mark_paid", lambda e, i, k, d: e.mark_paid(
                i, k, external_transaction_id=d.get("external_transaction_id"))), methods=["POST"]),
        Route("/invoices/{invoice_id}/hand-off", action(
            "hand_off", lambda e, i, k, d: e.hand_off(i, k)), methods=["POST"]),
    ]
    return Starlette(routes=routes)
