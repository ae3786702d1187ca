"""Reconciliation: what the provider holds, monthly parity, expectation suites, state mismatches.

Pure code (no Dagster imports): the Dagster side lives in ``recovery_pipeline/defs/reconciliation``.
"""

from recovery_pipeline.reconciliation.config import ReconciliationSettings
from recovery_pipeline.reconciliation.parity import mismatches, parity_table

__all__ = ["ReconciliationSettings", "mismatches", "parity_table"]
