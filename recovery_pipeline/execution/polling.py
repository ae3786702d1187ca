"""The polling path: list recovery actions from the provider, dedupe them, keep poll health.

- ``slicker_page_fetcher``: ``GET /v1/recovery_actions?pageSize=100&pageToken=...`` with
  ``Authorization: Bearer <PROVIDER_API_KEY>``; transient failures (network, 5xx, 429 honouring
  ``Retry-After``) retried with exponential backoff and jitter.
- ``poll_recovery_actions``: walks every page, stores each action once in ``recovery_actions``
  (insert-or-ignore on (provider, action id), raw item kept as ``body``), and records the outcome in
  ``poll_state`` (last successful poll time, consecutive failures, last error).
- ``polling_health``: ok / stale (no success for ``stale_after_minutes``) / failing (``failure_threshold``
  consecutive failures) / never; ``record_polling_alert`` fires the ``polling_stopped:<name>``
  incident through the monitoring group's ``Incidents`` + ``AlertSink`` while unhealthy and
  resolves it when healthy again (the monitoring alerting sensor evaluates the same poll_state).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from recovery_pipeline.execution.instructions import parse_time, pick
from recovery_pipeline.opsstore.models import alert_incidents, poll_state, recovery_actions
from recovery_pipeline.opsstore.store import insert_or_ignore, upsert, utcnow

DEFAULT_POLL_NAME = "slicker_recovery_actions"
PageFetcher = Callable[[str | None], dict[str, Any]]
ITEM_KEYS = ("recoveryActions", "recovery_actions", "actions", "items", "data")


class PollError(RuntimeError):
    """The provider could not be polled (after retries); recorded in poll_state."""


@dataclass
class PollResult:
    name: str
    pages: int = 0
    fetched: int = 0
    new: int = 0
    duplicates: int = 0
    total_size: int | None = None

    def as_metadata(self) -> dict[str, Any]:
        return {"pages": self.pages, "fetched": self.fetched, "new_actions": self.new,
                "already_known": self.duplicates, "provider_total_size": self.total_size}


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def slicker_page_fetcher(base_url: str, api_key: str | None, *, page_size: int = 100,
                         timeout: float = 15.0, attempts: int = 4,
                         transport: httpx.BaseTransport | None = None,
                         extra_params: dict[str, str] | None = None) -> PageFetcher:
    """A fetcher for Slicker's ``GET /v1/recovery_actions`` (page size capped at 100)."""
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                          transport=transport)
    size = max(1, min(int(page_size), 100))

    def _wait(state) -> float:
        base = wait_exponential_jitter(initial=0.2, max=5)(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(max(exc.retry_after, base), 30.0)
        return base

    @retry(retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(attempts), wait=_wait,
           reraise=True)
    def _get(params: dict[str, Any]) -> httpx.Response:
        try:
            resp = client.get("/v1/recovery_actions", params=params)
        except httpx.HTTPError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            ra = resp.headers.get("Retry-After")
            try:
                retry_after = float(ra) if ra else None
            except ValueError:
                retry_after = None
            raise _Transient(f"HTTP {resp.status_code}", retry_after)
        return resp

    def fetch(page_token: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"pageSize": size, **(extra_params or {})}
        if page_token:
            params["pageToken"] = page_token
        try:
            resp = _get(params)
        except _Transient as exc:
            raise PollError(f"GET /v1/recovery_actions failed after {attempts} attempts: {exc}") from exc
        if resp.status_code >= 400:
            raise PollError(f"GET /v1/recovery_actions: HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError as exc:
            raise PollError("GET /v1/recovery_actions: response is not JSON") from exc
        if not isinstance(data, dict):
            raise PollError("GET /v1/recovery_actions: response is not a JSON object")
        return data

    fetch.close = client.close  # type: ignore[attr-defined]
    return fetch


def page_items(page: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ITEM_KEYS:
        items = page.get(key)
        if isinstance(items, list):
            return [i for i in items if isinstance(i, dict)]
    return []


def _action_row(item: dict[str, Any], provider: str, now: datetime) -> dict[str, Any] | None:
    action_id = pick(item, "requestId", "id", "actionId")
    if not action_id:
        return None
    return {
        "provider": provider,
        "action_id": str(action_id)[:128],
        "invoice_id": (str(v)[:64] if (v := pick(item, "invoiceId")) else None),
        "subscription_id": (str(v)[:64] if (v := pick(item, "subscriptionId")) else None),
        "transaction_id": (str(v)[:64] if (v := pick(item, "transactionId")) else None),
        "action_suggestion": (str(v)[:64] if (v := pick(item, "actionSuggestion")) else None),
        "ideal_retry_time": parse_time(pick(item, "idealRetryTime")),
        "created_at": parse_time(pick(item, "createdAt")),
        "polled_at": now,
        "body": json.dumps(item, sort_keys=True, default=str),
        "status": "pending",
        "attempts": 0,
    }


def _state_update(conn: sa.Connection, name: str, **values: Any) -> None:
    conn.execute(upsert(poll_state, conn, ["name"], list(values)).values(name=name, **values))


def poll_recovery_actions(engine: sa.Engine, fetch_page: PageFetcher, *, provider: str = "slicker",
                          name: str = DEFAULT_POLL_NAME, now: datetime | None = None,
                          max_pages: int = 1000) -> PollResult:
    """Walk every page and store new actions once. On failure: poll_state records it, PollError."""
    now = now or utcnow()
    result = PollResult(name=name)
    token: str | None = None
    seen_tokens: set[str] = set()
    try:
        while True:
            page = fetch_page(token)
            result.pages += 1
            if result.total_size is None and page.get("totalSize") is not None:
                try:
                    result.total_size = int(page["totalSize"])
                except (TypeError, ValueError):
                    pass
            rows = [r for r in (_action_row(i, provider, now) for i in page_items(page)) if r]
            result.fetched += len(rows)
            if rows:
                with engine.begin() as conn:
                    inserted = 0
                    for row in rows:
                        # RETURNING, not rowcount (psycopg2 says -1 for ON CONFLICT DO NOTHING)
                        new = conn.execute(insert_or_ignore(recovery_actions, conn).values(**row)
                                           .returning(recovery_actions.c.action_id)).first()
                        inserted += new is not None
                result.new += inserted
                result.duplicates += len(rows) - inserted
            token = page.get("nextPageToken") or None
            if not token:
                break
            if token in seen_tokens or result.pages >= max_pages:
                raise PollError(f"paging did not end (token repeated or more than {max_pages} pages)")
            seen_tokens.add(token)
    except Exception as exc:
        with engine.begin() as conn:
            prev = conn.execute(sa.select(poll_state.c.consecutive_failures)
                                .where(poll_state.c.name == name)).scalar_one_or_none() or 0
            _state_update(conn, name, last_attempt_at=now, consecutive_failures=prev + 1,
                          last_error=f"{type(exc).__name__}: {exc}"[:2000])
        if isinstance(exc, PollError):
            raise
        raise PollError(f"{type(exc).__name__}: {exc}") from exc
    with engine.begin() as conn:
        _state_update(conn, name, last_attempt_at=now, last_success_at=now, consecutive_failures=0,
                      last_error=None,
                      cursor=json.dumps({"pages": result.pages, "fetched": result.fetched,
                                         "total_size": result.total_size}))
    return result


def polling_health(engine: sa.Engine, now: datetime | None = None, *, name: str = DEFAULT_POLL_NAME,
                   stale_after_minutes: float = 30, failure_threshold: int = 3) -> dict[str, Any]:
    """Is polling alive? ``status``: ok | stale | failing | never; ``healthy`` bool; ``message``."""
    now = now or utcnow()
    with engine.connect() as conn:
        row = conn.execute(sa.select(poll_state).where(poll_state.c.name == name)).first()
    last_success = parse_time(row.last_success_at) if row else None
    failures = int(row.consecutive_failures or 0) if row else 0
    age = (now - last_success).total_seconds() / 60 if last_success else None
    if failures >= failure_threshold:
        status = "failing"
        msg = (f"polling {name} failed {failures} times in a row "
               f"(last error: {(row.last_error or '')[:200]})")
    elif last_success is None:
        status = "never"
        msg = f"polling {name} has never succeeded"
    elif age is not None and age > stale_after_minutes:
        status = "stale"
        msg = f"polling {name} stopped: last success {age:.1f} min ago (> {stale_after_minutes} min)"
    else:
        status = "ok"
        msg = f"polling {name} ok: last success {age:.1f} min ago" if age is not None else "ok"
    return {
        "name": name,
        "status": status,
        "healthy": status == "ok",
        "last_success_at": last_success.isoformat() if last_success else None,
        "minutes_since_success": None if age is None else round(age, 2),
        "consecutive_failures": failures,
        "last_error": (row.last_error if row else None),
        "message": msg,
    }


def record_polling_alert(engine: sa.Engine, health: dict[str, Any], now: datetime | None = None,
                         sink: Any = None) -> str:
    """Fire or resolve the ``polling_stopped:<name>`` incident from a ``polling_health`` result.

    Goes through the monitoring group's ``Incidents`` (one alert per incident, one resolution,
    delivered by its ``AlertSink``; the same key its alerting sensor uses, so the two never
    double-announce). Without the monitoring package it keeps the ``alert_incidents`` row itself.
    Returns ``fired`` (new incident announced), ``firing`` (already firing), ``resolved`` or ``ok``.
    """
    now = now or utcnow()
    key = f"polling_stopped:{health['name']}"
    try:
        from recovery_pipeline.monitoring.alerts import AlertSink, Incidents
    except ImportError:  # pragma: no cover - the monitoring package ships with the project
        return _record_incident_row(engine, key, health, now)
    incidents = Incidents(engine, sink or AlertSink.from_env())
    if not health["healthy"]:
        return "fired" if incidents.fire(key, "ERROR", health["message"], now) else "firing"
    return "resolved" if incidents.resolve(key, health["message"], now) else "ok"


def _record_incident_row(engine: sa.Engine, key: str, health: dict[str, Any], now: datetime) -> str:
    with engine.begin() as conn:
        row = conn.execute(sa.select(alert_incidents).where(alert_incidents.c.incident_key == key)).first()
        if not health["healthy"]:
            if row is None or row.status != "firing":
                conn.execute(upsert(alert_incidents, conn, ["incident_key"],
                                    ["status", "severity", "message", "first_fired_at", "last_seen_at",
                                     "resolved_at"]).values(
                    incident_key=key, status="firing", severity="ERROR", message=health["message"],
                    first_fired_at=now, last_seen_at=now, resolved_at=None))
                return "fired"
            conn.execute(alert_incidents.update().where(alert_incidents.c.incident_key == key)
                         .values(last_seen_at=now, message=health["message"]))
            return "firing"
        if row is not None and row.status == "firing":
            conn.execute(alert_incidents.update().where(alert_incidents.c.incident_key == key)
                         .values(status="resolved", resolved_at=now, last_seen_at=now))
            return "resolved"
    return "ok"
