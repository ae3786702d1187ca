"""Month arithmetic for monthly partitions (``YYYY-MM`` keys, UTC bounds)."""

from __future__ import annotations

from datetime import UTC, date, datetime


def month_key(d: date | datetime) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def add_months(d: date, n: int) -> date:
    y, m = divmod(d.year * 12 + (d.month - 1) + n, 12)
    return date(y, m + 1, 1)


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) of a ``YYYY-MM`` month in UTC. Accepts a partition key ``YYYY-MM-DD`` too."""
    y, m = int(month[:4]), int(month[5:7])
    start = datetime(y, m, 1, tzinfo=UTC)
    nxt = add_months(start.date(), 1)
    return start, datetime(nxt.year, nxt.month, 1, tzinfo=UTC)


def partition_to_month(partition_key: str) -> str:
    """Dagster monthly partition keys are ``YYYY-MM-01``; the warehouse uses ``YYYY-MM``."""
    return partition_key[:7]


def month_to_partition(month: str) -> str:
    return f"{month[:7]}-01"


def last_n_months(n: int, today: date | None = None) -> list[str]:
    """The ``n`` months ending with the current one, oldest first."""
    today = today or datetime.now(UTC).date()
    first = date(today.year, today.month, 1)
    return [month_key(add_months(first, -i)) for i in range(n - 1, -1, -1)]


def history_months(n: int, today: date | None = None) -> list[str]:
    """The ``n`` complete months before the current one, oldest first (a backfill window)."""
    today = today or datetime.now(UTC).date()
    first = date(today.year, today.month, 1)
    return [month_key(add_months(first, -i)) for i in range(n, 0, -1)]
