"""Dagster resources, chosen in one place.

``build_resources()`` is the single spot where the embedded default vs production resources are
picked, from ``settings.load_settings()``. Secrets reach resources only as ``dg.EnvVar``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from functools import cached_property

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr

from recovery_pipeline.reconciliation.config import ReconciliationSettings
from recovery_pipeline.settings import Settings, load_settings

_RECON_DEFAULTS = ReconciliationSettings()


class WarehouseResource(dg.ConfigurableResource):
    """The analytics warehouse: a DuckDB file (default) or PostgreSQL by URL."""

    target: str

    @property
    def is_postgres(self) -> bool:
        return self.target.startswith("postgresql")

    @contextlib.contextmanager
    def duckdb(self, read_only: bool = False) -> Iterator:
        import duckdb

        if self.is_postgres:
            raise ValueError("the warehouse is PostgreSQL; use sqlalchemy_engine()")
        con = duckdb.connect(self.target, read_only=read_only)
        try:
            yield con
        finally:
            con.close()

    def sqlalchemy_engine(self) -> sa.Engine:
        if not self.is_postgres:
            raise ValueError("the warehouse is DuckDB; use duckdb()")
        return sa.create_engine(self.target)


class OpsStoreResource(dg.ConfigurableResource):
    """The operational store (SQLAlchemy URL): inbox, ledger, audit trail, dead letters."""

    url: str
    _engine: sa.Engine | None = PrivateAttr(default=None)

    def engine(self) -> sa.Engine:
        if self._engine is None:
            from recovery_pipeline.opsstore import create_ops_engine, init_ops_store

            self._engine = create_ops_engine(self.url)
            init_ops_store(self._engine)
        return self._engine


class BillingDatabaseResource(dg.ConfigurableResource):
    """The billing system's SQL database (the demo billing engine's by default)."""

    url: str

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url)


class PipelineSettingsResource(dg.ConfigurableResource):
    """Paths resolved from the environment (exports drop folder, data dir, integration file)."""

    data_dir: str
    exports_dir: str
    integration_file: str

    @cached_property
    def settings(self) -> Settings:  # pragma: no cover - convenience
        return load_settings()


class ReconciliationConfig(dg.ConfigurableResource):
    """Reconciliation and monitoring thresholds and where the provider-side view comes from.

    Tolerances are per measure (invoices, transactions, failed_transactions, invoice_outcomes,
    invoices_by_currency, invoices_by_country): a difference passes when it is within ``abs`` or
    within ``pct`` percent of the larger side. Empty means exact agreement.
    """

    provider: str = ""  # empty: integration.yaml provider.name
    provider_base_url: str = "http://127.0.0.1:8701"
    # sandbox_counts (GET /sandbox/counts) | push_ledger (acknowledged records) | auto (try, fall back)
    provider_counts_source: str = "auto"
    abs_tolerance: dict[str, float] = {}
    pct_tolerance: dict[str, float] = {}
    # thresholds: defaults come from ReconciliationSettings, the one place they are defined
    high_volume_min_share: float = _RECON_DEFAULTS.high_volume_min_share
    missed_action_grace_minutes: float = _RECON_DEFAULTS.missed_action_grace_minutes
    executed_action_grace_minutes: float = _RECON_DEFAULTS.executed_action_grace_minutes
    max_source_lag_hours: float = _RECON_DEFAULTS.max_source_lag_hours
    poll_stale_minutes: float = _RECON_DEFAULTS.poll_stale_minutes
    poll_max_consecutive_failures: int = _RECON_DEFAULTS.poll_max_consecutive_failures
    dead_letter_threshold: int = _RECON_DEFAULTS.dead_letter_threshold
    webhook_success_min_rate: float = _RECON_DEFAULTS.webhook_success_min_rate

    def reconciliation_settings(self):
        thresholds = {f.name: getattr(self, f.name) for f in dataclasses.fields(ReconciliationSettings)
                      if f.name != "tolerances"}
        return ReconciliationSettings.from_mappings(
            abs_tolerance=dict(self.abs_tolerance), pct_tolerance=dict(self.pct_tolerance), **thresholds)

    def provider_name(self, integration_file: str | None = None) -> str:
        if self.provider:
            return self.provider
        from recovery_pipeline.integration import load_integration

        return load_integration(integration_file).provider.name


class ExecutionSettingsResource(dg.ConfigurableResource):
    """How provider decisions are executed and polled (issue 4: execution + polling path).

    The rollout mode and cohort come from integration.yaml (``rollout``; ``provider.max_receive_count``);
    ``mode`` here, then ``RECOVERY_EXECUTION_MODE``, override it. The kill switch is env
    ``RECOVERY_KILL_SWITCH`` or the ops-store flag (``recovery-pipeline kill-switch on|off``).
    """

    integration_file: str
    mode: str = ""  # empty: integration.yaml / RECOVERY_EXECUTION_MODE
    provider_base_url: str = "http://127.0.0.1:8701"
    provider_api_key: str | None = None  # dg.EnvVar("PROVIDER_API_KEY"); None: settings.secret()
    poll_name: str = "slicker_recovery_actions"
    poll_page_size: int = 100
    # same defaults as ReconciliationConfig.poll_* (the monitoring alert reads the same poll_state)
    poll_stale_minutes: float = 30.0
    poll_failure_threshold: int = 3
    # force polling on/off; None: integration.yaml (recovery_execution polling|hybrid, provider slicker)
    poll_enabled: bool | None = None

    def integration(self):
        from recovery_pipeline.integration import load_integration

        return load_integration(self.integration_file)

    def policy(self):
        from recovery_pipeline.execution.policy import policy_from_integration

        policy = policy_from_integration(self.integration())
        return policy.model_copy(update={"mode": self.mode}) if self.mode else policy

    def polling_enabled(self) -> bool:
        if self.poll_enabled is not None:
            return self.poll_enabled
        integ = self.integration()
        return integ.uses_polling and integ.provider.name == "slicker"

    def page_fetcher(self):
        from recovery_pipeline.execution.polling import slicker_page_fetcher
        from recovery_pipeline.settings import SECRET_ENV_VARS, secret

        key = self.provider_api_key or secret(SECRET_ENV_VARS["provider_api_key"])
        return slicker_page_fetcher(self.provider_base_url, key, page_size=self.poll_page_size)


class BillingEngineResource(dg.ConfigurableResource):
    """The billing system's action API (the demo billing engine over HTTP by default)."""

    base_url: str
    api_key: str | None = None  # dg.EnvVar("BILLING_ENGINE_API_KEY"); None: settings.secret()

    def billing_system(self, context_engine: sa.Engine | None = None):
        """A ``BillingSystem``; ``context_engine`` (the billing DB) adds cohort attributes."""
        from recovery_pipeline.execution.billing import HttpBillingSystem, billing_db_context_lookup
        from recovery_pipeline.settings import SECRET_ENV_VARS, secret

        key = self.api_key or secret(SECRET_ENV_VARS["billing_engine_api_key"])
        lookup = billing_db_context_lookup(context_engine) if context_engine is not None else None
        return HttpBillingSystem(self.base_url, key, context_lookup=lookup)


class ProviderResource(dg.ConfigurableResource):
    """The recovery provider the data is pushed to (issue 3: provider_sync).

    Zero/empty fields come from integration.yaml ``provider`` (name, batch_size,
    requests_per_second, max_receive_count). The API key only via ``dg.EnvVar("PROVIDER_API_KEY")``;
    None falls back to the loopback demo key (settings.secret).
    """

    integration_file: str
    base_url: str
    api_key: str | None = None
    provider: str = ""
    batch_size: int = 0
    requests_per_second: float = 0.0
    max_receive_count: int = 0
    concurrency: int = 0  # 0: automatic (rate x 300 ms, 2..16 batches in flight)
    timeout_seconds: float = 10.0

    def options(self):
        from recovery_pipeline.providers.config import resolve_options

        return resolve_options(
            base_url=self.base_url, api_key=self.api_key, integration_file=self.integration_file,
            provider=self.provider, batch_size=self.batch_size,
            requests_per_second=self.requests_per_second, max_receive_count=self.max_receive_count,
            concurrency=self.concurrency, timeout_seconds=self.timeout_seconds)


def _env_secret(name: str):
    """``dg.EnvVar(name)`` when the variable is set, else None (the loopback demo default applies)."""
    import os

    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    settings = settings or load_settings()
    return {
        "warehouse": WarehouseResource(target=settings.warehouse),
        "ops_store": OpsStoreResource(url=settings.ops_store_url),
        "billing_db": BillingDatabaseResource(url=settings.billing_db_url),
        "pipeline_settings": PipelineSettingsResource(
            data_dir=str(settings.data_dir),
            exports_dir=str(settings.exports_dir),
            integration_file=str(settings.integration_file),
        ),
        "reconciliation": ReconciliationConfig(provider_base_url=settings.provider_base_url),
        "execution_settings": ExecutionSettingsResource(
            integration_file=str(settings.integration_file),
            provider_base_url=settings.provider_base_url,
            provider_api_key=_env_secret("PROVIDER_API_KEY"),
        ),
        "billing_engine": BillingEngineResource(
            base_url=settings.billing_engine_url,
            api_key=_env_secret("BILLING_ENGINE_API_KEY"),
        ),
        "provider": ProviderResource(
            integration_file=str(settings.integration_file),
            base_url=settings.provider_base_url,
            api_key=_env_secret("PROVIDER_API_KEY"),
        ),
    }
