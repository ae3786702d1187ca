"""Monthly partitions shared by the ``billing_exports`` and ``canonical`` groups.

The start is computed from today's date minus ``PARTITION_HISTORY_MONTHS`` (no I/O at import):
the longest historical window integration.yaml accepts, so any configured window
(``historical_window_months``, 1..24) is a range of these partitions; the backfill CLI and the
Dagster backfill UI pick that range. ``end_offset=1`` includes the current (in-progress) month.
"""


from datetime import UTC, date, datetime

import dagster as dg

from recovery_pipeline.ingest.months import add_months
from recovery_pipeline.integration import MAX_WINDOW_MONTHS

PARTITION_HISTORY_MONTHS = MAX_WINDOW_MONTHS


def partitions_start(today: date | None = None) -> date:
    today = today or datetime.now(UTC).date()
    return add_months(date(today.year, today.month, 1), -(PARTITION_HISTORY_MONTHS - 1))


monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=partitions_start().isoformat(), end_offset=1, timezone="UTC", fmt="%Y-%m-%d",
)
