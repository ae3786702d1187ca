"""Reconciliation and monitoring thresholds: configuration, not constants.

A tolerance is per measure (``invoices``, ``transactions``, ``failed_transactions``,
``invoice_outcomes``, ``invoices_by_currency``, ``invoices_by_country``): a difference is within
tolerance when ``|difference| <= abs`` or ``|difference| <= pct/100 * max(billing, provider)``.
The defaults demand exact agreement: both sides are counting the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MEASURES = (
    "invoices",
    "transactions",
    "failed_transactions",
    "invoice_outcomes",
    "invoices_by_currency",
    "invoices_by_country",
)


@dataclass(frozen=True)
class Tolerance:
    abs: float = 0.0
    pct: float = 0.0

    def allowed(self, billing: float, provider: float) -> float:
        return max(self.abs, self.pct / 100.0 * max(abs(billing), abs(provider)))


@dataclass(frozen=True)
class ReconciliationSettings:
    tolerances: dict[str, Tolerance] = field(default_factory=dict)
    # a currency/country is "high volume" in a month when it holds at least this share of the
    # month's invoices on either side; high-volume keys must be present and equal on both sides
    high_volume_min_share: float = 0.01
    # state mismatches: an action is "missed" this long after its ideal retry time
    missed_action_grace_minutes: float = 60.0
    # an executed retry must produce a billing transaction within this time
    executed_action_grace_minutes: float = 30.0
    # monitoring thresholds
    max_source_lag_hours: float = 26.0
    poll_stale_minutes: float = 30.0
    poll_max_consecutive_failures: int = 3
    dead_letter_threshold: int = 10
    webhook_success_min_rate: float = 0.95

    def tolerance(self, measure: str) -> Tolerance:
        return self.tolerances.get(measure, Tolerance())

    @classmethod
    def from_mappings(cls, abs_tolerance: dict[str, float] | None = None,
                      pct_tolerance: dict[str, float] | None = None, **kwargs) -> ReconciliationSettings:
        abs_tolerance = abs_tolerance or {}
        pct_tolerance = pct_tolerance or {}
        unknown = sorted((set(abs_tolerance) | set(pct_tolerance)) - set(MEASURES))
        if unknown:
            raise ValueError(f"unknown reconciliation measures {unknown}; expected some of {list(MEASURES)}")
        tol = {m: Tolerance(abs=float(abs_tolerance.get(m, 0)), pct=float(pct_tolerance.get(m, 0)))
               for m in MEASURES}
        return cls(tolerances=tol, **kwargs)
