"""Helpers for the webhook receiver tests: secrets, signed deliveries, a receiver on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from recovery_pipeline.httpserve import free_port, serve_in_thread
from recovery_pipeline.opsstore.models import webhook_inbox, webhook_rejections
from recovery_pipeline.settings import REPO_ROOT
from recovery_pipeline.webhooks.app import ReceiverConfig, create_app
from recovery_pipeline.webhooks.signing import signed_headers

SECRETS = {
    "slicker": "test-slicker-token-5f1c",
    "revtain": "whsec_test_revtain_6a2d",
    "butter": "test-butter-secret-77ab",
    "standard": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "stripe": "whsec_test_stripe_91cc",
}
SLICKER_BASIC = "merchant:basic-pass-3e9"

ENV = {
    "SLICKER_WEBHOOK_TOKEN": SECRETS["slicker"],
    "SLICKER_WEBHOOK_BASIC": SLICKER_BASIC,
    "REVTAIN_WEBHOOK_SECRET": SECRETS["revtain"],
    "BUTTER_WEBHOOK_SECRET": SECRETS["butter"],
    "STANDARD_WEBHOOK_SECRET": SECRETS["standard"],
    "STRIPE_WEBHOOK_SECRET": SECRETS["stripe"],
}


def event_body(provider: str, event_id: str, event_type: str | None = None) -> bytes:
    """A realistic body for ``provider`` carrying ``event_id`` where the provider puts it."""
    if provider == "slicker":
        doc = {"id": event_id, "type": event_type or "recovery_action", "created": "2026-01-05T10:00:00Z",
               "data": {"invoiceId": "in_1", "subscriptionId": "sub_1",
                        "actionSuggestion": "ACTION_SUGGESTION_RETRY", "idealRetryTime": "2026-01-06T09:00:00Z"}}
    elif provider == "revtain":
        doc = {"id": event_id, "event": event_type or "recovery.success", "revtainTransactionId": "rt_1",
               "invoiceId": "in_1", "amount": 1999, "currency": "usd"}
    elif provider == "butter":
        doc = {"timestamp": 1767607200, "invoice_id": f"in_{event_id}", "recovered": False, "custom": {}}
    elif provider == "standard":
        doc = {"type": event_type or "invoice.recovered", "data": {"invoice_id": "in_1"}}
    elif provider == "stripe":
        doc = {"id": event_id, "object": "event", "type": event_type or "invoice.payment_failed",
               "data": {"object": {"id": "in_1", "object": "invoice", "attempt_count": 1}}}
    else:
        raise ValueError(provider)
    return json.dumps(doc).encode()


def delivery(provider: str, event_id: str, event_type: str | None = None, now: float | None = None,
             secret: str | None = None, body: bytes | None = None) -> tuple[bytes, dict]:
    body = event_body(provider, event_id, event_type) if body is None else body
    headers = signed_headers(provider, secret or SECRETS[provider], body, event_id=event_id,
                             event_type=event_type or "end_of_dunning", now=now)
    return body, headers


def config(db_url: str, **kw) -> ReceiverConfig:
    return ReceiverConfig(ops_store_url=db_url, secrets=dict(SECRETS), slicker_basic=SLICKER_BASIC, **kw)


@contextlib.contextmanager
def receiver(db_url: str, **kw):
    """The receiver app under a real uvicorn on a free loopback port; yields an httpx client."""
    with serve_in_thread(create_app(config(db_url, **kw))) as url, httpx.Client(base_url=url, timeout=30) as c:
        yield c


def inbox_rows(db_url: str) -> list[dict]:
    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(webhook_inbox).order_by(webhook_inbox.c.id))]
    finally:
        eng.dispose()


def rejection_rows(db_url: str) -> list[dict]:
    eng = sa.create_engine(db_url)
    try:
        with eng.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(webhook_rejections))]
    finally:
        eng.dispose()


def start_receiver_processes(db_url: str, tmp_path: Path, count: int = 1) -> list[tuple[subprocess.Popen, str]]:
    """``recovery-pipeline receiver`` x ``count`` in subprocesses on free ports (started in
    parallel); returns [(process, base url)] once every one answers /healthz."""
    env = dict(os.environ, **ENV, RECOVERY_DATA_DIR=str(tmp_path / "data"), RECOVERY_OPS_STORE_URL=db_url,
               PYTHONPATH=str(REPO_ROOT))
    started = []
    for _ in range(count):
        port = free_port()
        log = open(tmp_path / f"receiver-{port}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen([sys.executable, "-m", "recovery_pipeline.cli", "receiver", "--port", str(port),
                                 "--log-level", "warning"], env=env, cwd=REPO_ROOT, stdout=log, stderr=log)
        started.append((proc, f"http://127.0.0.1:{port}", tmp_path / f"receiver-{port}.log"))
    deadline = time.monotonic() + 90
    pending = list(started)
    while pending and time.monotonic() < deadline:
        for item in list(pending):
            proc, url, log_path = item
            if proc.poll() is not None:
                for p, _, _ in started:
                    stop_process(p)
                raise RuntimeError(log_path.read_text()[-3000:])
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    pending.remove(item)
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    if pending:
        for p, _, _ in started:
            stop_process(p)
        raise TimeoutError("receiver process did not start")
    return [(p, u) for p, u, _ in started]


def start_receiver_process(db_url: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    return start_receiver_processes(db_url, tmp_path, 1)[0]


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def post_many(base_url: str, requests: list[tuple[str, bytes, dict]], concurrency: int = 32) -> list[int]:
    """POST every (path, body, headers) over ``concurrency`` keep-alive HTTP/1.1 connections.

    A deliberately thin client (asyncio streams): the server under test, not the client, should
    use the CPU. Returns the status codes in request order.
    """
    import asyncio
    from urllib.parse import urlparse

    u = urlparse(base_url)
    codes: list[int] = [0] * len(requests)
    next_index = iter(range(len(requests)))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        try:
            for i in next_index:
                path, body, headers = requests[i]
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "content-length")
                writer.write(f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{head}"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                raw = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in raw.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                codes[i] = int(raw[9:12])
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return codes
