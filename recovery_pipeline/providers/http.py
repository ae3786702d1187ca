"""The HTTP side of talking to a provider: a shared token-bucket rate limiter per provider, and a
client that retries with exponential backoff + jitter (tenacity), honouring ``Retry-After``.

Retry rules:
* 429 is flow control, not failure: wait ``Retry-After`` (capped by ``max_retry_after``) and try
  again, without using up an attempt; the shared bucket is paused so other threads wait too.
  After ``max_429_wait`` seconds of 429s in one send the send gives up.
* 5xx, 408, timeouts and dropped connections are failures: retried with exponential backoff and
  jitter until ``max_attempts`` (the push engine's ``max_receive_count``) attempts have failed.
* any other 4xx is final at once (the request itself is wrong; retrying will not help).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import tenacity

from recovery_pipeline.providers.base import ProviderAdapter


class TokenBucket:
    """Thread-safe rate limiter: ``rate`` starts per second, ``capacity`` burst (GCRA form of a
    token bucket).

    Each caller *reserves* the next start slot under the lock and sleeps until it: slots follow
    one another every ``1 / rate`` s on a schedule, so a thread that the OS wakes a few ms late
    (a loaded machine) does not push every later start back as well. A pause (429 Retry-After)
    moves the schedule past the pause; a caller that reserved a slot before the pause and wakes
    inside it reserves again.
    """

    def __init__(self, rate: float, capacity: float = 1.0):
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._interval = 1.0 / self.rate
        self._tat = time.monotonic()  # theoretical arrival time of the next start
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Reserve the next start slot; returns how long to wait for it (0.0 = go now)."""
        with self._lock:
            now = time.monotonic()
            tat = max(self._tat, now, self._paused_until)
            start = max(now, tat - (self.capacity - 1.0) * self._interval, self._paused_until)
            self._tat = tat + self._interval
            return start - now

    def acquire(self) -> float:
        """Block until this caller's start slot; returns seconds waited."""
        waited = 0.0
        while True:
            wait = self._reserve()
            if wait > 0:
                time.sleep(wait)
                waited += wait
            with self._lock:
                if time.monotonic() >= self._paused_until:
                    return waited
            # a 429 paused the bucket while we slept: reserve again after the pause

    def pause(self, seconds: float) -> None:
        """Nobody starts for ``seconds`` (after a 429 with Retry-After); no burst after it."""
        with self._lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)
            self._tat = max(self._tat, self._paused_until)


_BUCKETS: dict[tuple[str, str, float], TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def shared_bucket(provider: str, base_url: str, rate: float) -> TokenBucket:
    """One bucket per (provider, base URL, rate) in this process, shared by every client."""
    key = (provider, base_url.rstrip("/"), float(rate))
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get(key)
        if bucket is None:
            bucket = _BUCKETS[key] = TokenBucket(rate)
        return bucket


@dataclass
class RetryPolicy:
    max_attempts: int = 5  # failed attempts (5xx/timeouts/drops) before giving up
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 60.0  # cap on a single Retry-After wait
    max_429_wait: float = 600.0  # total time one send may spend waiting out 429s


@dataclass
class SendResult:
    status: int | None
    body: Any
    request_id: str | None
    attempts: int  # every HTTP attempt made
    failures: int  # attempts that failed (5xx/timeout/drop)
    throttled: int  # 429s received
    error: str | None = None
    retry_after_waited: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None, body: Any = None,
                 retry_after: float | None = None, request_id: str | None = None):
        super().__init__(message)
        self.kind, self.status, self.body = kind, status, body
        self.retry_after, self.request_id = retry_after, request_id


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


@dataclass
class ProviderClient:
    adapter: ProviderAdapter
    base_url: str
    api_key: str
    requests_per_second: float
    timeout: float = 10.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    transport: httpx.BaseTransport | None = None

    def __post_init__(self) -> None:
        self.bucket = shared_bucket(self.adapter.name, self.base_url, self.requests_per_second)
        self._client = httpx.Client(base_url=self.base_url.rstrip("/"), timeout=self.timeout,
                                    transport=self.transport,
                                    limits=httpx.Limits(max_connections=32,
                                                        max_keepalive_connections=32))
        self._headers = {"Content-Type": "application/json",
                         **self.adapter.auth_headers(self.api_key)}

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, method: str, path: str, body: Any = None, *, content: bytes | None = None,
             extra_headers: dict[str, str] | None = None) -> SendResult:
        """Send one logical request with rate limiting and retries. Never raises for HTTP errors."""
        raw = content if content is not None else (
            None if body is None else json.dumps(body, separators=(",", ":")).encode())
        headers = {**self._headers, **(extra_headers or {})}
        counters = {"attempts": 0, "failures": 0, "throttled": 0, "waited_429": 0.0}
        policy = self.policy
        wait_exp = tenacity.wait_exponential_jitter(initial=policy.backoff_initial,
                                                    max=policy.backoff_max, jitter=policy.jitter)

        def attempt() -> httpx.Response:
            self.bucket.acquire()
            counters["attempts"] += 1
            try:
                resp = self._client.request(method, path, content=raw, headers=headers)
            except httpx.TransportError as exc:  # timeouts, refused, dropped connections
                counters["failures"] += 1
                raise _Retryable("failure", f"{type(exc).__name__}: {exc}") from exc
            parsed = _json(resp)
            rid = self.adapter.request_id(parsed, resp.headers)
            if resp.status_code == 429:
                counters["throttled"] += 1
                ra = _retry_after(resp.headers.get("retry-after"))
                if ra is not None:
                    ra = min(ra, policy.max_retry_after)
                    self.bucket.pause(ra)
                raise _Retryable("throttled", "429 Too Many Requests", 429, parsed, ra, rid)
            if resp.status_code >= 500 or resp.status_code == 408:
                counters["failures"] += 1
                raise _Retryable("failure", f"HTTP {resp.status_code}", resp.status_code, parsed,
                                 _retry_after(resp.headers.get("retry-after")), rid)
            return resp

        def should_stop(state: tenacity.RetryCallState) -> bool:
            if counters["failures"] >= policy.max_attempts:
                return True
            return counters["waited_429"] >= policy.max_429_wait

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Retryable) and exc.kind == "throttled":
                # the bucket pause already holds the Retry-After; add a small exponential step
                delay = exc.retry_after if exc.retry_after is not None else wait_exp(state)
                counters["waited_429"] += delay
                return min(0.05, delay) if exc.retry_after is not None else delay
            delay = wait_exp(state)
            if isinstance(exc, _Retryable) and exc.retry_after:
                delay = max(delay, min(exc.retry_after, policy.max_retry_after))
            return delay

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable), stop=should_stop, wait=wait,
            reraise=True)
        try:
            resp = retrying(attempt)
        except _Retryable as exc:
            return SendResult(exc.status, exc.body, exc.request_id, counters["attempts"],
                              counters["failures"], counters["throttled"], str(exc),
                              counters["waited_429"])
        parsed = _json(resp)
        error = None if 200 <= resp.status_code < 300 else _error_text(resp.status_code, parsed)
        return SendResult(resp.status_code, parsed, self.adapter.request_id(parsed, resp.headers),
                          counters["attempts"], counters["failures"], counters["throttled"], error,
                          counters["waited_429"])


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _error_text(status: int, body: Any) -> str:
    if isinstance(body, dict):
        detail = body.get("error") or body.get("message")
        if body.get("fieldErrors"):
            detail = f"{detail}: {json.dumps(body['fieldErrors'][:5])}"
        return f"HTTP {status}: {detail}"
    return f"HTTP {status}"
