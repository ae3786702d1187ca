"""The kill switch: pauses execution of recovery decisions without stopping ingestion.

On when the environment says so (``RECOVERY_KILL_SWITCH`` = 1/true/on/yes) or when the ops store
``control_flags`` row ``kill_switch`` holds ``on``. The row is what the on-call flips
(``recovery-pipeline kill-switch on|off|status``): the execution sensor reads it every tick and the
executor re-reads it before every action, so it takes effect within one sensor tick.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from recovery_pipeline.opsstore.models import control_flags
from recovery_pipeline.opsstore.store import upsert, utcnow

FLAG = "kill_switch"
ENV_VAR = "RECOVERY_KILL_SWITCH"
_TRUE = {"1", "true", "on", "yes"}


@dataclass(frozen=True)
class KillSwitchState:
    on: bool
    source: str | None  # env | ops_store | None
    updated_at: datetime | None = None
    updated_by: str | None = None

    def describe(self) -> str:
        if not self.on:
            return "kill switch is off: recovery actions execute per the rollout mode"
        who = f" by {self.updated_by}" if self.updated_by else ""
        when = f" at {self.updated_at.isoformat()}" if self.updated_at else ""
        return f"kill switch is ON ({self.source}{who}{when}): execution paused, ingestion continues"


def env_kill_switch(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return (env.get(ENV_VAR) or "").strip().lower() in _TRUE


def kill_switch_state(engine: sa.Engine, env: Mapping[str, str] | None = None) -> KillSwitchState:
    if env_kill_switch(env):
        return KillSwitchState(True, "env")
    with engine.connect() as conn:
        row = conn.execute(sa.select(control_flags).where(control_flags.c.name == FLAG)).first()
    if row is not None and str(row.value).strip().lower() in _TRUE:
        return KillSwitchState(True, "ops_store", row.updated_at, row.updated_by)
    return KillSwitchState(False, None, row.updated_at if row else None, row.updated_by if row else None)


def is_kill_switch_on(engine: sa.Engine, env: Mapping[str, str] | None = None) -> bool:
    return kill_switch_state(engine, env).on


def set_kill_switch(engine: sa.Engine, on: bool, *, by: str | None = None) -> KillSwitchState:
    with engine.begin() as conn:
        conn.execute(upsert(control_flags, conn, ["name"], ["value", "updated_at", "updated_by"]).values(
            name=FLAG, value="on" if on else "off", updated_at=utcnow(), updated_by=by))
    return kill_switch_state(engine, env={})
