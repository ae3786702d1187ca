"""The environment, resolved in one place.

Everything that differs between the embedded default (files under ``data/``, loopback services)
and production (Postgres, real provider and billing URLs) is read here from environment variables.
Secrets are *named* here (the env var that holds them) and read only where they are used, so that
no secret value is ever kept on a settings object that could end up in a log or in metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Names of the environment variables that hold secrets. Values are read with ``secret()``
# (or ``dg.EnvVar`` inside Dagster resources), never stored on Settings.
SECRET_ENV_VARS = {
    "provider_api_key": "PROVIDER_API_KEY",
    "slicker_webhook_token": "SLICKER_WEBHOOK_TOKEN",
    "slicker_webhook_basic": "SLICKER_WEBHOOK_BASIC",  # "user:password"
    "revtain_webhook_secret": "REVTAIN_WEBHOOK_SECRET",
    "butter_webhook_secret": "BUTTER_WEBHOOK_SECRET",
    "standard_webhook_secret": "STANDARD_WEBHOOK_SECRET",
    "stripe_webhook_secret": "STRIPE_WEBHOOK_SECRET",
    "stripe_api_key": "STRIPE_API_KEY",
    "billing_engine_api_key": "BILLING_ENGINE_API_KEY",
    "alert_slack_webhook_url": "ALERT_SLACK_WEBHOOK_URL",
    "alert_smtp_password": "ALERT_SMTP_PASSWORD",
}

# Embedded-default secrets for the loopback demo only (the sandbox and receiver are both ours).
# Production sets real values in the environment; these never apply when the variable is set.
DEMO_SECRETS = {
    "PROVIDER_API_KEY": "demo-provider-key",
    "SLICKER_WEBHOOK_TOKEN": "demo-slicker-token",
    "REVTAIN_WEBHOOK_SECRET": "whsec_demo_revtain_secret",
    "BUTTER_WEBHOOK_SECRET": "demo-butter-secret",
    "STANDARD_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "STRIPE_WEBHOOK_SECRET": "whsec_demo_stripe_secret",
    "BILLING_ENGINE_API_KEY": "demo-billing-key",
}


def secret(env_var: str, env: dict[str, str] | None = None) -> str | None:
    """Return a secret from the environment, falling back to the loopback demo value."""
    env = os.environ if env is None else env
    value = env.get(env_var)
    if value:
        return value
    return DEMO_SECRETS.get(env_var)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    warehouse: str  # a DuckDB file path, or a postgresql:// URL
    ops_store_url: str  # SQLAlchemy URL
    billing_db_url: str  # SQLAlchemy URL of the (demo) billing database
    exports_dir: Path
    dagster_home: Path
    integration_file: Path
    provider_base_url: str
    billing_engine_url: str
    receiver_url: str

    @property
    def warehouse_is_postgres(self) -> bool:
        return self.warehouse.startswith("postgresql")

    @property
    def duckdb_path(self) -> Path:
        if self.warehouse_is_postgres:
            raise ValueError("the warehouse is PostgreSQL, not DuckDB")
        return Path(self.warehouse)

    def ensure_dirs(self) -> None:
        for d in (self.data_dir, self.exports_dir, self.dagster_home):
            d.mkdir(parents=True, exist_ok=True)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Resolve the environment. Pure: reads ``env`` (default ``os.environ``), touches no files."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("RECOVERY_DATA_DIR") or REPO_ROOT / "data").resolve()
    warehouse = env.get("RECOVERY_WAREHOUSE") or str(data_dir / "warehouse.duckdb")
    return Settings(
        data_dir=data_dir,
        warehouse=warehouse,
        ops_store_url=env.get("RECOVERY_OPS_STORE_URL") or f"sqlite:///{data_dir / 'ops.sqlite'}",
        billing_db_url=env.get("RECOVERY_BILLING_DB_URL") or f"sqlite:///{data_dir / 'billing.sqlite'}",
        exports_dir=Path(env.get("RECOVERY_EXPORTS_DIR") or data_dir / "exports").resolve(),
        dagster_home=Path(env.get("DAGSTER_HOME") or data_dir / "dagster_home").resolve(),
        integration_file=Path(
            env.get("RECOVERY_INTEGRATION_FILE") or REPO_ROOT / "integration.yaml"
        ).resolve(),
        provider_base_url=env.get("PROVIDER_BASE_URL") or "http://127.0.0.1:8701",
        billing_engine_url=env.get("BILLING_ENGINE_URL") or "http://127.0.0.1:8702",
        receiver_url=env.get("RECEIVER_URL") or "http://127.0.0.1:8703",
    )
