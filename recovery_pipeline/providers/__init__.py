"""Provider adapters (slicker, revtain, butter) behind one interface, the rate-limited HTTP client,
the push engine (ledger, batches, retries, dead letters, redrive) and the failure hand-off.
Pure code: no Dagster imports."""

from recovery_pipeline.providers.base import ADAPTERS, ProviderAdapter, get_adapter

__all__ = ["ADAPTERS", "ProviderAdapter", "get_adapter"]
