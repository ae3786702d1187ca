"""Sign and verify provider webhooks: one place for every scheme (pure, no I/O).

Schemes (see PROVIDERS.md):

* **slicker**  - no HMAC: ``Authorization: Bearer <token>`` or ``Basic base64(user:password)``.
* **revtain**  - ``X-Revtain-Signature`` = hex HMAC-SHA256 of the raw body (key: the whole secret string).
* **butter**   - ``X-Butter-Webhook-Signature`` = hex HMAC-SHA256 of ``"{body}+{expiration}"``;
  expiry in ``X-Butter-Webhook-Expires`` (also seen as ``-Expiration``); expired -> rejected.
* **standard** - Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature: v1,<b64> [v1,<b64> ...]``; secret ``whsec_<base64>``; +-5 minutes.
* **stripe**   - ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``; verified with the ``stripe`` package.

The receiver verifies with these functions before it parses anything; the provider sandbox signs
with them, so both sides share one implementation. Every comparison is constant time.
Verification failures raise :class:`SignatureError` (or its subclasses); the ``reason`` never
contains a secret or a signature value, so it is safe to log and store.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import standardwebhooks

PROVIDERS = ("slicker", "revtain", "butter", "standard", "stripe")

STANDARD_TOLERANCE_S = 300
STRIPE_TOLERANCE_S = 300
BUTTER_DEFAULT_TTL_S = 300

# Header names (canonical spelling; lookups are case-insensitive).
REVTAIN_SIGNATURE = "X-Revtain-Signature"
REVTAIN_EVENT_ID = "X-Revtain-Event-Id"
BUTTER_TYPE = "X-Butter-Webhook-Type"
BUTTER_EXPIRES = "X-Butter-Webhook-Expires"
BUTTER_EXPIRATION = "X-Butter-Webhook-Expiration"
BUTTER_SIGNATURE = "X-Butter-Webhook-Signature"
BUTTER_DEDUP_ID = "X-Butter-Webhook-Deduplication-ID"
STRIPE_SIGNATURE = "Stripe-Signature"

# Headers whose values are credentials or signatures: never stored or logged.
SENSITIVE_HEADERS = frozenset(
    h.lower()
    for h in (
        "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
        REVTAIN_SIGNATURE, BUTTER_SIGNATURE, "webhook-signature", STRIPE_SIGNATURE,
    )
)
REDACTED = "[redacted]"


class SignatureError(Exception):
    """The request is not provably from the provider (401). ``reason`` is safe to log."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class MissingSignature(SignatureError):
    """A required auth/signature header is absent."""


class StaleTimestamp(SignatureError):
    """The signature is valid-looking but outside the accepted time window (or expired)."""


# --- helpers ------------------------------------------------------------------------------------

def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _hmac_hex(key: str | bytes, data: bytes) -> str:
    key_b = key.encode() if isinstance(key, str) else key
    return hmac.new(key_b, data, hashlib.sha256).hexdigest()


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _now(now: float | datetime | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        return now.timestamp()
    return float(now)


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with every credential/signature value replaced by ``[redacted]`` (names lowercased)."""
    return {k.lower(): (REDACTED if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()}


# --- Slicker: bearer or basic auth --------------------------------------------------------------

def slicker_auth_header(token: str | None = None, basic: str | None = None) -> str:
    """The ``Authorization`` value Slicker sends: bearer token, or basic ``user:password``."""
    if token:
        return f"Bearer {token}"
    if basic:
        return "Basic " + base64.b64encode(basic.encode()).decode()
    raise ValueError("slicker auth needs a token or a basic user:password")


def verify_slicker(headers: Mapping[str, str], *, token: str | None, basic: str | None) -> None:
    """Accept the request when its Authorization matches the configured bearer token or basic pair."""
    if not token and not basic:
        raise SignatureError("slicker webhook auth is not configured")
    auth = _lower(headers).get("authorization")
    if not auth:
        raise MissingSignature("missing Authorization header")
    scheme, _, value = auth.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and token:
        if _eq(value, token):
            return
        raise SignatureError("bearer token mismatch")
    if scheme == "basic" and basic:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise SignatureError("malformed basic credentials") from None
        if _eq(decoded, basic):
            return
        raise SignatureError("basic credentials mismatch")
    raise SignatureError(f"unsupported or unconfigured auth scheme: {scheme[:16]}")


# --- Revtain: hex HMAC-SHA256 of the raw body ---------------------------------------------------

def sign_revtain(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body keyed with the whole ``whsec_...`` string."""
    return _hmac_hex(secret, _as_bytes(body))


def verify_revtain(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    sig = _lower(headers).get(REVTAIN_SIGNATURE.lower())
    if not sig:
        raise MissingSignature(f"missing {REVTAIN_SIGNATURE} header")
    sig = sig.strip()
    if sig.lower().startswith("sha256="):
        sig = sig[len("sha256="):]
    if not _eq(sig.lower(), sign_revtain(secret, body)):
        raise SignatureError("revtain signature mismatch")


# --- Butter: hex HMAC-SHA256 of "{body}+{expiration}", reject expired --------------------------

def sign_butter(secret: str, body: bytes, expires: int) -> str:
    return _hmac_hex(secret, _as_bytes(body) + b"+" + str(int(expires)).encode())


def verify_butter(headers: Mapping[str, str], body: bytes, secret: str, now: float | None = None) -> None:
    h = _lower(headers)
    sig = h.get(BUTTER_SIGNATURE.lower())
    if not sig:
        raise MissingSignature(f"missing {BUTTER_SIGNATURE} header")
    exp_raw = h.get(BUTTER_EXPIRES.lower()) or h.get(BUTTER_EXPIRATION.lower())
    if not exp_raw:
        raise MissingSignature(f"missing {BUTTER_EXPIRES} header")
    exp_raw = exp_raw.strip()
    if not exp_raw.isdigit():
        raise SignatureError("butter expiration is not unix seconds")
    # the signature covers the expiration exactly as sent
    expected = _hmac_hex(secret, _as_bytes(body) + b"+" + exp_raw.encode())
    if not _eq(sig.strip().lower(), expected):
        raise SignatureError("butter signature mismatch")
    if int(exp_raw) < _now(now):
        raise StaleTimestamp("butter webhook expired")


# --- Standard Webhooks --------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _standard(secret: str) -> standardwebhooks.Webhook:
    return standardwebhooks.Webhook(secret)


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` value ``v1,<base64>`` (``standardwebhooks`` computes it)."""
    data = body if isinstance(body, str) else bytes(body).decode()
    ts = datetime.fromtimestamp(int(timestamp), tz=UTC)
    return _standard(secret).sign(msg_id=msg_id, timestamp=ts, data=data)


def verify_standard(headers: Mapping[str, str], body: bytes, secret: str, now: float | None = None,
                    tolerance: int = STANDARD_TOLERANCE_S) -> None:
    h = _lower(headers)
    msg_id, ts_raw, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and ts_raw and sigs):
        raise MissingSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        ts = int(ts_raw.strip())
        datetime.fromtimestamp(ts, tz=UTC)  # out of range (fuzz: 10**20) -> not a timestamp, no 500
    except (ValueError, OverflowError, OSError):
        raise SignatureError("webhook-timestamp is not unix seconds") from None
    try:
        data = bytes(body).decode()
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None
    try:
        expected = sign_standard(secret, msg_id, ts, data).split(",", 1)[1]
    except (binascii.Error, ValueError, standardwebhooks.webhooks.EmptyWebhookSecretError):
        raise SignatureError("configured standard-webhooks secret is not whsec_<base64>") from None
    matched = False
    for versioned in sigs.split():
        version, _, sig = versioned.partition(",")
        if version == "v1" and _eq(sig, expected):
            matched = True
    if not matched:
        raise SignatureError("no matching standard-webhooks signature")
    if abs(_now(now) - ts) > tolerance:
        raise StaleTimestamp("webhook-timestamp outside tolerance")


# --- Stripe -------------------------------------------------------------------------------------

def sign_stripe(secret: str, body: bytes | str, timestamp: int) -> str:
    """``t=<ts>,v1=<hex>`` as Stripe sends it."""
    import stripe  # heavy: imported on first use

    data = body if isinstance(body, str) else bytes(body).decode()
    return stripe.WebhookSignature.generate_signature_header(data, secret, timestamp=int(timestamp))


def verify_stripe(headers: Mapping[str, str], body: bytes, secret: str,
                  tolerance: int = STRIPE_TOLERANCE_S, now: float | None = None) -> None:
    """Verify ``Stripe-Signature`` with ``stripe.WebhookSignature.verify_header`` (any v1 may match,
    so rotated secrets work), then the timestamp window (both directions) against ``now``."""
    import stripe  # heavy: imported on first use

    header = _lower(headers).get(STRIPE_SIGNATURE.lower())
    if not header:
        raise MissingSignature(f"missing {STRIPE_SIGNATURE} header")
    try:
        payload = bytes(body).decode()
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    except stripe.SignatureVerificationError as exc:
        # stripe's messages carry no secret; keep only the first sentence
        raise SignatureError(f"stripe: {str(exc).split('.')[0][:120]}") from None
    ts = int(next(p.split("=", 1)[1] for p in header.split(",") if p.strip().startswith("t=")))
    if tolerance and abs(_now(now) - ts) > tolerance:
        raise StaleTimestamp("stripe timestamp outside tolerance")


# --- dispatch -----------------------------------------------------------------------------------

def verify(provider: str, headers: Mapping[str, str], body: bytes, secret: str | None = None, *,
           token: str | None = None, basic: str | None = None, now: float | None = None) -> None:
    """Verify a delivery for ``provider`` (``secret`` for HMAC schemes; ``token``/``basic`` for Slicker)."""
    if provider == "slicker":
        return verify_slicker(headers, token=token, basic=basic)
    if not secret:
        raise SignatureError(f"{provider} webhook secret is not configured")
    if provider == "revtain":
        return verify_revtain(headers, body, secret)
    if provider == "butter":
        return verify_butter(headers, body, secret, now=now)
    if provider == "standard":
        return verify_standard(headers, body, secret, now=now)
    if provider == "stripe":
        return verify_stripe(headers, body, secret, now=now)
    raise ValueError(f"unknown webhook provider: {provider}")


def signed_headers(provider: str, secret_or_token: str | None, body: bytes | str, *,
                   event_id: str | None = None, event_type: str | None = None,
                   now: float | None = None, basic: str | None = None,
                   butter_ttl: int = BUTTER_DEFAULT_TTL_S,
                   butter_expiry_header: str = BUTTER_EXPIRES) -> dict[str, str]:
    """The full header set ``provider`` sends with ``body`` (used by the sandbox, tests, bench).

    ``secret_or_token``: the Slicker bearer token (or None with ``basic="user:password"``), or the
    signing secret for the HMAC schemes. ``event_id``: Butter dedupe id / Standard ``webhook-id``
    (required there), sent as ``X-Revtain-Event-Id`` for Revtain. ``now``: unix seconds.
    """
    raw = _as_bytes(body)
    ts = int(_now(now))
    headers = {"Content-Type": "application/json"}
    if provider == "slicker":
        headers["Authorization"] = slicker_auth_header(token=secret_or_token, basic=basic)
    elif provider == "revtain":
        headers[REVTAIN_SIGNATURE] = sign_revtain(_need(secret_or_token), raw)
        if event_id:
            headers[REVTAIN_EVENT_ID] = event_id
    elif provider == "butter":
        if not event_id:
            raise ValueError("butter webhooks carry a deduplication id: pass event_id")
        expires = ts + butter_ttl
        headers[BUTTER_TYPE] = event_type or "unknown"
        headers[butter_expiry_header] = str(expires)
        headers[BUTTER_SIGNATURE] = sign_butter(_need(secret_or_token), raw, expires)
        headers[BUTTER_DEDUP_ID] = event_id
    elif provider == "standard":
        if not event_id:
            raise ValueError("standard webhooks carry a webhook-id: pass event_id")
        headers["webhook-id"] = event_id
        headers["webhook-timestamp"] = str(ts)
        headers["webhook-signature"] = sign_standard(_need(secret_or_token), event_id, ts, raw)
    elif provider == "stripe":
        headers[STRIPE_SIGNATURE] = sign_stripe(_need(secret_or_token), raw, ts)
    else:
        raise ValueError(f"unknown webhook provider: {provider}")
    return headers


def _need(secret: str | None) -> str:
    if not secret:
        raise ValueError("a signing secret is required")
    return secret
