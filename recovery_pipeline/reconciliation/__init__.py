"""Reconciliation: what the provider holds, monthly parity, expectation suites, state mismatches.

Pure code (no Dagster imports): the Dagster side lives in ``recovery_pipeline/defs/reconciliation``.
``parity_table``/``mismatches`` are imported on first use, so importing the package (or its
``config``, as resources.py does) stays cheap.
"""

from recovery_pipeline.reconciliation.config import ReconciliationSettings

__all__ = ["ReconciliationSettings", "mismatches", "parity_table"]


def __getattr__(name: str):
    if name in ("mismatches", "parity_table"):
        from recovery_pipeline.reconciliation import parity

        return getattr(parity, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
