"""Webhook delivery from the sandbox to the merchant's receiver, signed with
``recovery_pipeline.webhooks.signing`` and retried on each provider's own schedule.

Schedules are delays (seconds) before attempt 1, 2, ...; multiplied by ``time_scale`` so tests can
run a 24-hour schedule in milliseconds. After the last attempt the event is marked ``failed``.
"""

from __future__ import annotations

import random
import time
from urllib.parse import urlsplit

import httpx

from recovery_pipeline.provider_sandbox.store import SandboxStore
from recovery_pipeline.webhooks import signing

SCHEDULES: dict[str, tuple[float, ...]] = {
    # Slicker: exponential backoff.
    "slicker": (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    # Revtain: 0 s, 2 s, 8 s, then a durable schedule for 24 h.
    "revtain": (0, 2, 8, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 29330),  # sums to 24 h
    # Butter: every 12 h for 7 days.
    "butter": (0,) + (43200,) * 14,
}


def next_delay(provider: str, attempts_done: int, time_scale: float) -> float | None:
    """Seconds to wait before the next attempt after ``attempts_done`` attempts, or None (give up)."""
    schedule = SCHEDULES[provider]
    if attempts_done >= len(schedule):
        return None
    return schedule[attempts_done] * time_scale


def target_url(webhook_url: str, provider: str) -> str:
    """``{provider}`` in the URL is substituted; a bare base URL gets ``/webhooks/<provider>``."""
    if "{provider}" in webhook_url:
        return webhook_url.replace("{provider}", provider)
    if urlsplit(webhook_url).path in ("", "/"):
        return webhook_url.rstrip("/") + f"/webhooks/{provider}"
    return webhook_url


def headers_for(provider: str, secrets: dict[str, str | None], body: bytes, event_id: str,
                event_type: str) -> dict[str, str]:
    return signing.signed_headers(provider, secrets.get(provider), body, event_id=event_id,
                                  event_type=event_type)


async def deliver_due(store: SandboxStore, client: httpx.AsyncClient, webhook_url: str | None,
                      secrets: dict[str, str | None], time_scale: float, *, force: bool = False,
                      limit: int = 200, rng: random.Random | None = None,
                      duplicate_fraction: float = 0.0, shuffle: bool = False) -> dict[str, int]:
    """Attempt every pending event that is due (all pending ones with ``force``).

    Faults for receiver tests: ``shuffle`` delivers a pass out of order; ``duplicate_fraction`` of
    the delivered events are sent a second time (same id, same body, freshly signed)."""
    out = {"attempted": 0, "delivered": 0, "failed": 0, "gave_up": 0, "duplicates_sent": 0}
    rng = rng or random.Random()
    if not webhook_url:
        return out
    now = time.time()
    rows = store.query(
        "select * from outbox where status = 'pending' and (? or next_attempt_at <= ?)"
        " order by next_attempt_at, id limit ?", (1 if force else 0, now, limit))
    if shuffle:
        rows = list(rows)
        rng.shuffle(rows)
    for row in rows:
        body = row["body"].encode()
        out["attempted"] += 1
        status, error = None, None
        try:
            resp = await client.post(
                target_url(webhook_url, row["provider"]), content=body,
                headers=headers_for(row["provider"], secrets, body, row["event_id"], row["type"]))
            status = resp.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = row["attempts"] + 1
        store.bump("webhook_attempts")
        if status is not None and 200 <= status < 300:
            out["delivered"] += 1
            store.bump("webhooks_delivered")
            store.execute("update outbox set status = 'delivered', attempts = ?, last_status = ?,"
                          " delivered_at = ? where id = ?", (attempts, status, time.time(), row["id"]))
            if duplicate_fraction and rng.random() < duplicate_fraction:
                out["duplicates_sent"] += 1
                store.bump("webhook_duplicates_sent")
                try:
                    await client.post(target_url(webhook_url, row["provider"]), content=body,
                                      headers=headers_for(row["provider"], secrets, body,
                                                          row["event_id"], row["type"]))
                except httpx.HTTPError:
                    pass  # the duplicate is a fault injection: its fate does not matter
            continue
        out["failed"] += 1
        delay = next_delay(row["provider"], attempts, time_scale)
        if delay is None:
            out["gave_up"] += 1
            store.execute("update outbox set status = 'failed', attempts = ?, last_status = ?,"
                          " last_error = ? where id = ?", (attempts, status, error, row["id"]))
        else:
            store.execute("update outbox set attempts = ?, last_status = ?, last_error = ?,"
                          " next_attempt_at = ? where id = ?",
                          (attempts, status, error, time.time() + delay, row["id"]))
    return out
