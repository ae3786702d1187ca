"""Card numbers never reach the webhook inbox: mask them in a verified body before it is stored.

A provider may (wrongly) echo a card number inside an otherwise valid, signed event: in a string
value (``"note": "card 4242 4242 4242 4242"``) or as a JSON number under a card-like key
(``"cardNumber": 4242424242424242``). The receiver keeps the event (its decision must not be lost)
but stores it with every such value masked the way ``ingest.cardscan`` masks export rows
(``************4242``), and logs only that it did so. The signature was checked on the raw bytes
before this; the stored body is the masked one (and says so in ``_card_numbers_masked``).

Cheap on the hot path: a byte-level regex prefilter; JSON is re-parsed only when a candidate run
of 13-19 digits is present.
"""

from __future__ import annotations

import json
import re
from typing import Any

from recovery_pipeline.ingest.cardscan import luhn_valid, mask_card_numbers

_CANDIDATE = re.compile(rb"\d(?:[ -]?\d){12,18}")
# Pre-scan (C speed, no regex): digits -> "0", every other byte -> "x", the separators " " and "-"
# dropped; a card-number candidate (13+ digits, at most one separator between two) always leaves
# 13 zeros in a row, so without them there is nothing to mask and the exact pass is skipped.
_DIGITS_TABLE = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_DIGITS_DELETE = b" -"
_THIRTEEN = b"0" * 13


def _may_hold_card_number(data: bytes) -> bool:
    return _THIRTEEN in data.translate(_DIGITS_TABLE, _DIGITS_DELETE)


def _text_may_hold_card_number(text: str) -> bool:
    # any non-ASCII digit class (e.g. Arabic-Indic digits) also matches \d: let the exact pass judge
    if not text.isascii():
        return True
    return _THIRTEEN in text.encode("ascii").translate(_DIGITS_TABLE, _DIGITS_DELETE)
_CARD_KEY = re.compile(r"card|pan$|^number$|account|cc_?num", re.IGNORECASE)


def _mask(value: Any, key: str = "") -> tuple[Any, bool]:
    if isinstance(value, str):
        masked, found = mask_card_numbers(value)
        return masked, found
    if isinstance(value, bool):
        return value, False
    if isinstance(value, int) and _CARD_KEY.search(key) and luhn_valid(str(abs(value))):
        digits = str(abs(value))
        return "*" * (len(digits) - 4) + digits[-4:], True
    if isinstance(value, dict):
        found = False
        out = {}
        for k, v in value.items():
            mk, fk = _mask(k) if isinstance(k, str) else (k, False)
            mv, fv = _mask(v, str(k))
            out[mk] = mv
            found = found or fk or fv
        return out, found
    if isinstance(value, list):
        found = False
        out_list = []
        for v in value:
            mv, fv = _mask(v, key)
            out_list.append(mv)
            found = found or fv
        return out_list, found
    return value, False


def mask_card_numbers_in_body(body: bytes) -> tuple[bytes, bool]:
    """Return (body with card numbers masked, whether anything was masked).

    ``body`` is a verified JSON document (the receiver has parsed it already); anything that does
    not parse is returned unchanged (the caller rejected it before this).
    """
    if not _may_hold_card_number(body) or not _CANDIDATE.search(body):
        return body, False
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body, False
    masked, found = _mask(doc)
    if not found:
        return body, False
    if isinstance(masked, dict):
        masked["_card_numbers_masked"] = True
    return json.dumps(masked, ensure_ascii=False).encode(), True


def mask_card_numbers_in_text(text: str | None) -> str | None:
    """Mask card numbers in a header value, an event id or a type (None stays None)."""
    if text is None:
        return None
    if not _text_may_hold_card_number(text):
        return text
    return mask_card_numbers(text)[0]


def mask_card_numbers_in_values(values: dict[str, str]) -> dict[str, str]:
    """The same mapping with card numbers masked in every value (one pre-scan over all of them)."""
    if not _text_may_hold_card_number("\n".join(values.values())):
        return values
    return {k: mask_card_numbers_in_text(v) for k, v in values.items()}
