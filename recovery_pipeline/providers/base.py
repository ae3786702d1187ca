"""One interface for every provider: how canonical rows become wire payloads, where they go, how
a batch is wrapped, how the provider authenticates us and acknowledges a request."""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

ENTITIES = ("subscriptions", "invoices", "transactions")  # dependency order
PRIMARY_KEYS = {"subscriptions": "subscription_id", "invoices": "invoice_id",
                "transactions": "transaction_id"}
_CARD_LIKE = re.compile(r"^\d{12,19}$")


class CardNumberRefused(ValueError):
    """A value that looks like a full card number was about to leave the system."""


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _suspect(v: Any) -> bool:
    t = type(v)
    if t is str:
        if len(v) < 12 or not v[0].isdigit():
            return False
        digits = v.replace(" ", "").replace("-", "")
    elif t is int:
        if v < 10**11:
            return False
        digits = str(v)
    else:
        return False
    return bool(_CARD_LIKE.match(digits)) and luhn_ok(digits)


def find_card_numbers(payload: Any, path: str = "") -> list[str]:
    """Paths of values that look like full card numbers (12-19 digits, spaces/dashes allowed,
    passing Luhn). Cheap pre-filter: only strings of length >= 12 and ints >= 10**11 are checked."""
    found: list[str] = []
    t = type(payload)
    if t is dict:
        for k, v in payload.items():
            tv = type(v)
            if tv is dict or tv is list:
                found += find_card_numbers(v, f"{path}.{k}" if path else str(k))
            elif _suspect(v):
                found.append(f"{path}.{k}" if path else str(k))
    elif t is list:
        for i, v in enumerate(payload):
            found += find_card_numbers(v, f"{path}[{i}]")
    elif _suspect(payload):
        found.append(path)
    return found


def assert_no_card_numbers(payload: Any) -> None:
    """Raise CardNumberRefused when any value looks like a card number (the value is never put in
    the message)."""
    found = find_card_numbers(payload)
    if found:
        raise CardNumberRefused(f"field {found[0]!r} looks like a card number: refused")


_ZERO = timedelta(0)


def iso_utc(value: Any) -> str | None:
    """ISO-8601 UTC with a Z, from a datetime (naive = UTC), a date or an ISO string."""
    if value is None:
        return None
    if type(value) is datetime:  # fast path (the push hot loop): naive or already UTC
        tz = value.tzinfo
        if tz is None:
            return value.isoformat() + "Z"
        if tz is UTC or value.utcoffset() == _ZERO:
            return value.replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, str):
        if not value:
            return None
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def minor(value: Any) -> int | None:
    return None if value is None else int(value)


_ORJSON_OPTS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS)
# Card-number candidates in a serialized ASCII payload: every value ``_suspect`` would flag is 12+
# bytes of digits, spaces and dashes in a row; mapped to "0" they show up as a run of 12 zeros.
_CARD_RUN = bytes.maketrans(b"0123456789 -", b"0" * 12)
_TWELVE = b"0" * 12


def _orjson(item: Any) -> bytes | None:
    try:
        raw = orjson.dumps(item, default=str, option=_ORJSON_OPTS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return raw if raw.isascii() else None


def canonical_json(item: Any) -> bytes:
    """Sorted-key compact JSON of one payload, deterministic. For ASCII payloads of str / int /
    bool / None / list / dict it is byte-for-byte what ``json.dumps(item, sort_keys=True,
    separators=(",", ":"), default=str)`` gives (so ledgers written before keep matching), made by
    orjson (~5x faster); non-ASCII payloads and what orjson refuses take the json module. (A float
    may be spelled differently than ``repr`` spells it: at worst one idempotent re-send.)"""
    raw = _orjson(item)
    if raw is None:
        raw = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str).encode()
    return raw


def payload_hash(item: Any) -> str:
    """Stable hash of one wire payload (the ledger's change detector)."""
    return hashlib.sha256(canonical_json(item)).hexdigest()


def may_hold_card_number(raw: bytes) -> bool:
    """False only when the serialized payload ``raw`` cannot hold a value ``_suspect`` flags
    (ASCII, no ``\\u`` escape, no run of 12+ digits / spaces / dashes): a cheap pre-filter for the
    exact check (``canonical_json`` spells non-ASCII text with ``\\u`` escapes)."""
    return not raw.isascii() or b"\\u" in raw or _TWELVE in raw.translate(_CARD_RUN)


def hash_and_check(item: Any) -> str:
    """``payload_hash(item)``, refusing card-number-like values on the way: one serialization for
    both; the exact (per-value) check runs only when the payload may hold a candidate."""
    raw = canonical_json(item)
    if may_hold_card_number(raw):
        assert_no_card_numbers(item)
    return hashlib.sha256(raw).hexdigest()


def drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class ProviderAdapter(ABC):
    """How one provider takes our data. Subclasses are stateless and cheap to build."""

    name: str
    default_batch_limit: int = 100
    default_requests_per_second: float = 5.0
    handoff_mode: str = "push"  # push: failed transactions are pushed; execute: per-failure call

    # --- auth and acknowledgement -----------------------------------------------------------
    @abstractmethod
    def auth_headers(self, api_key: str) -> dict[str, str]: ...

    def request_id(self, body: Any, headers: Any) -> str | None:
        if isinstance(body, dict) and body.get("requestId"):
            return str(body["requestId"])
        return headers.get("x-request-id") if headers is not None else None

    # --- ingest ----------------------------------------------------------------------------
    @abstractmethod
    def ingest_path(self, entity: str) -> str | None:
        """Where a batch of ``entity`` goes, or None when this provider does not take it."""

    def include(self, entity: str, row: dict[str, Any]) -> bool:
        return True

    def record_id(self, entity: str, row: dict[str, Any]) -> str:
        return str(row[PRIMARY_KEYS[entity]])

    @abstractmethod
    def to_wire(self, entity: str, row: dict[str, Any]) -> dict[str, Any]: ...

    def wire_record_id(self, entity: str, item: dict[str, Any]) -> str:
        return str(item["id"])

    def batch_body(self, entity: str, items: list[dict[str, Any]]) -> Any:
        return {entity: items}

    def batch_items(self, entity: str, body: Any) -> list[dict[str, Any]]:
        return body[entity] if isinstance(body, dict) else list(body)

    # --- hand-off --------------------------------------------------------------------------
    def execute_path(self) -> str | None:
        return None

    def execute_body(self, txn: dict[str, Any]) -> dict[str, Any]:
        """Only providers with an ``execute_path`` (Revtain) take hand-offs one by one."""
        raise TypeError(f"{self.name} takes failed transactions by push, not by execute")


def wire(entity: str, adapter: ProviderAdapter, row: dict[str, Any]) -> dict[str, Any]:
    """Map and check one row: the payload never carries a card number."""
    item = adapter.to_wire(entity, row)
    assert_no_card_numbers(item)
    return item


def wire_hashed(entity: str, adapter: ProviderAdapter, row: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``wire()`` + ``payload_hash()`` with one serialization (the push engine's hot path)."""
    item = adapter.to_wire(entity, row)
    return item, hash_and_check(item)


def _adapters() -> dict[str, type[ProviderAdapter]]:
    from recovery_pipeline.providers.butter import ButterAdapter
    from recovery_pipeline.providers.revtain import RevtainAdapter
    from recovery_pipeline.providers.slicker import SlickerAdapter

    return {"slicker": SlickerAdapter, "revtain": RevtainAdapter, "butter": ButterAdapter}


ADAPTERS = ("slicker", "revtain", "butter")


def get_adapter(name: str) -> ProviderAdapter:
    """The adapter for a provider named in configuration."""
    try:
        return _adapters()[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; choose one of {', '.join(ADAPTERS)}") from None
