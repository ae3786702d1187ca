"""Dagster resources, chosen in one place.

``build_resources()`` is the single spot where the embedded default vs production resources are
picked, from ``settings.load_settings()``. Secrets reach resources only as ``dg.EnvVar``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cached_property

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr

from recovery_pipeline.settings import Settings, load_settings


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
    }
