"""Shared pieces of the fuzz / secrets suites: card-number generators and a whole-store text scan.

``luhn_card(digits)`` turns random digits into a Luhn-valid card number; ``card_numbers_in(text)``
is an independent detector (not the project's ``ingest/cardscan.py``): every run of 13-19 digits,
optionally separated by single spaces or dashes, that passes the Luhn check. The scans read every
text column of every table of a DuckDB file or a SQLAlchemy database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa


def luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled positions, counted from the (future) check digit's left neighbour
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_ok(digits: str) -> bool:
    return digits.isdigit() and len(digits) >= 2 and luhn_check_digit(digits[:-1]) == digits[-1]


def luhn_card(body: str) -> str:
    """``body`` (12-18 digits) + its check digit: a Luhn-valid 13-19 digit number."""
    return body + luhn_check_digit(body)


def format_card(card: str, style: str) -> str:
    if style == "spaces":
        return " ".join(card[i:i + 4] for i in range(0, len(card), 4))
    if style == "dashes":
        return "-".join(card[i:i + 4] for i in range(0, len(card), 4))
    return card


_RUN = re.compile(r"(?<![0-9A-Za-z_])\d(?:[ -]?\d)*(?![0-9A-Za-z_])")


def card_numbers_in(text: str) -> list[str]:
    """Luhn-valid 13-19 digit numbers standing on their own in ``text``: the whole of a run of digit
    groups (single spaces or dashes between them), or any window of consecutive groups of it
    ("4242 4242 4242 4242 123" holds a card number followed by a CVC)."""
    out = []
    for m in _RUN.finditer(text):
        groups = re.split(r"[ -]", m.group(0))
        whole = "".join(groups)
        if 13 <= len(whole) <= 19 and luhn_ok(whole):
            out.append(whole)
            continue
        for i in range(len(groups)):
            for j in range(i + 1, len(groups) + 1):
                digits = "".join(groups[i:j])
                if 13 <= len(digits) <= 19 and luhn_ok(digits):
                    out.append(digits)
    return out


def contains_any(text: str, needles: list[str]) -> list[str]:
    """Which of ``needles`` (digit strings) occur in ``text``, separators ignored."""
    squashed = re.sub(r"[ -]", "", text)
    return [n for n in needles if n and n in squashed]


def duckdb_text_values(path: str | Path) -> Iterator[tuple[str, str, str]]:
    """(table, column, value) for every non-null text value of every table of a DuckDB file."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        cols = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type in ('VARCHAR', 'JSON') or data_type like 'VARCHAR%'").fetchall()
        for schema, table, column in cols:
            q = f'select "{column}" from "{schema}"."{table}" where "{column}" is not null'
            for (value,) in con.execute(q).fetchall():
                yield f"{schema}.{table}", column, str(value)
    finally:
        con.close()


def sql_text_values(url: str) -> Iterator[tuple[str, str, str]]:
    """(table, column, value) for every non-null value (as text) of every table of a SQL database."""
    eng = sa.create_engine(url)
    try:
        insp = sa.inspect(eng)
        with eng.connect() as conn:
            for table in insp.get_table_names():
                t = sa.Table(table, sa.MetaData(), autoload_with=conn)
                for row in conn.execute(sa.select(t)):
                    for col, value in row._mapping.items():
                        if value is None:
                            continue
                        if isinstance(value, bytes):
                            value = value.decode("utf-8", "replace")
                        yield table, str(col), str(value)
    finally:
        eng.dispose()
