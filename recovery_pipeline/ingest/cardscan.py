"""Find and mask card-number-like values (Luhn-valid runs of 13-19 digits) in Arrow columns.

Raw loads pass every card-like / free-text column through ``mask_card_numbers_in_table`` before
anything is written: the digits are replaced by ``*`` except the last four, and the row is flagged
in ``_card_like_columns`` so the canonical layer quarantines it (reason ``card_number_like``).
A card number is therefore never stored, not even in the raw layer or the quarantine's row_json.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

# digits, optionally separated by single spaces or dashes: "4111 1111 1111 1111", "4111-1111-..."
CANDIDATE_PATTERN = r"\d(?:[ -]?\d){12,18}"
# a run standing on its own, not glued to an identifier: "4242424242424242" or "card 4242 4242 4242
# 4242" is a card number; the digits inside an id such as "ch_7b3e5204..." or "pm_12345..." are not
_CANDIDATE = re.compile(r"(?<![0-9A-Za-z_])\d(?:[ -]?\d){12,}(?![0-9A-Za-z_])")
_SEPARATOR = re.compile(r"([ -])")
# the table scan's prefilter (RE2): CANDIDATE_PATTERN standing on its own, as _CANDIDATE requires
# (a superset of _CANDIDATE's matches): skips the digits inside ids such as "ch_1234..." in Arrow
_PREFILTER_PATTERN = r"(?:^|[^0-9A-Za-z_])\d(?:[ -]?\d){12}"

# Columns that may carry a pasted card number, per entity: every text column but the record ids
# (card-like and free-text fields, and the short code columns - status, currency, country - which
# a broken export can fill with anything; they cost nothing here while shorter than 13 characters).
CARD_SCAN_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("email", "country"),
    "subscriptions": ("plan_id", "business_entity", "status", "currency", "billing_period_unit"),
    "invoices": ("business_entity", "status", "currency"),
    "transactions": (
        "gateway_transaction_id", "gateway_status", "decline_code", "decline_message",
        "payment_method_type", "payment_method_token", "card_brand", "card_bin",
        "card_fingerprint", "card_country", "status", "currency", "gateway",
    ),
}


def luhn_valid(digits: str) -> bool:
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_groups(run: str) -> tuple[str, bool]:
    """A run of digit groups ("4242 4242 4242 4242 123": a card then a CVC or an expiry) whose
    whole is not a card number: mask every window of consecutive groups that is one (13-19
    digits, Luhn-valid; longest first), keeping its last four digits and the separators."""
    parts = _SEPARATOR.split(run)
    groups, seps = parts[0::2], parts[1::2]
    out = list(groups)
    hit = False
    i = 0
    while i < len(groups):
        for j in range(len(groups), i, -1):
            if 13 <= len("".join(groups[i:j])) <= 19 and luhn_valid("".join(groups[i:j])):
                keep = 4
                for k in range(j - 1, i - 1, -1):
                    g = groups[k]
                    out[k] = "*" * (len(g) - min(keep, len(g))) + (g[len(g) - keep:] if keep else "")
                    keep = max(0, keep - len(g))
                hit = True
                i = j
                break
        else:
            i += 1
    return "".join(g + (seps[n] if n < len(seps) else "") for n, g in enumerate(out)), hit


def mask_card_numbers(value: str | None) -> tuple[str | None, bool]:
    """Return (value with Luhn-valid 13-19 digit runs masked, whether anything was masked)."""
    if not value:
        return value, False
    found = False

    def _sub(m: re.Match) -> str:
        nonlocal found
        digits = re.sub(r"[ -]", "", m.group(0))
        if luhn_valid(digits):
            found = True
            return "*" * (len(digits) - 4) + digits[-4:]
        masked, hit = _mask_groups(m.group(0))
        found = found or hit
        return masked

    masked = _CANDIDATE.sub(_sub, value)
    return masked, found


def mask_card_numbers_in_table(table: pa.Table, columns: tuple[str, ...] | list[str]) -> pa.Table:
    """Mask card numbers in ``columns`` and set ``_card_like_columns`` (comma list, null if none).

    Vectorised: a prefilter (RE2 in Arrow) finds the few candidate values, Python only looks at
    those, and the masked values and flags are scattered back with Arrow (no per-row Python).
    """
    n = table.num_rows
    flagged: dict[int, list[str]] = {}
    for name in columns:
        if name not in table.column_names:
            continue
        col = table.column(name)
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            continue
        longest = pc.max(pc.utf8_length(col)).as_py()
        if not longest or longest < 13:  # too short to hold a card number (e.g. card_bin)
            continue
        hit = pc.fill_null(pc.match_substring_regex(col, _PREFILTER_PATTERN), False)
        if not pc.any(hit).as_py():
            continue
        idx = pc.indices_nonzero(hit)
        masked_values, changed_idx = [], []
        for i, v in zip(idx.to_pylist(), col.take(idx).to_pylist(), strict=True):
            m, found = mask_card_numbers(v)
            if found:
                changed_idx.append(i)
                masked_values.append(m)
        if not changed_idx:
            continue
        new_col = pc.replace_with_mask(col.combine_chunks(), _row_mask(n, changed_idx),
                                       pa.array(masked_values, col.type))
        table = table.set_column(table.column_names.index(name), name, new_col)
        for i in changed_idx:
            flagged.setdefault(i, []).append(name)
    flags = pa.nulls(n, pa.string())
    if flagged:
        rows = sorted(flagged)
        flags = pc.replace_with_mask(flags, _row_mask(n, rows),
                                     pa.array([",".join(flagged[i]) for i in rows], pa.string()))
    if "_card_like_columns" in table.column_names:
        return table.set_column(table.column_names.index("_card_like_columns"),
                                "_card_like_columns", flags)
    return table.append_column("_card_like_columns", flags)


def _row_mask(n: int, rows: list[int]) -> pa.Array:
    """A boolean array of length ``n``, true at ``rows`` (sorted row indices)."""
    import numpy as np

    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return pa.array(mask)
