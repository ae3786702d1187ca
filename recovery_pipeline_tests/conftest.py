"""Shared fixtures: an isolated data dir per test, loopback ports, and a throwaway PostgreSQL db."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from recovery_pipeline.httpserve import free_port as _free_port
from recovery_pipeline.settings import load_settings

PG_ADMIN_URL = os.environ.get("RECOVERY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def free_port() -> int:
    return _free_port()


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    """Point every embedded store at ``tmp_path`` (RECOVERY_DATA_DIR) and return the Settings."""
    monkeypatch.setenv("RECOVERY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for var in ("RECOVERY_WAREHOUSE", "RECOVERY_OPS_STORE_URL", "RECOVERY_BILLING_DB_URL",
                "RECOVERY_EXPORTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    settings = load_settings()
    settings.ensure_dirs()
    return settings


def _pg_reachable() -> str | None:
    try:
        eng = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(sa.text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test, dropped afterwards.

    Skips with a clear message when PostgreSQL on 127.0.0.1:5432 is not reachable
    (`.ci/run` starts it when it is down).
    """
    problem = _pg_reachable()
    if problem:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} ({problem}); "
                    "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    name = f"rp_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
