"""Health figures of the push path, read from the ops store (pure; used by the asset checks)."""

from __future__ import annotations

import sqlalchemy as sa

from recovery_pipeline.opsstore.models import dead_letters, handoffs


def open_dead_letters(engine: sa.Engine, provider: str, kind: str = "push") -> dict[str, int]:
    """Dead letters still waiting for a redrive, by entity."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(dead_letters.c.entity, sa.func.count()).where(
            dead_letters.c.provider == provider, dead_letters.c.kind == kind,
            dead_letters.c.status.in_(("dead", "redriving"))).group_by(dead_letters.c.entity)).all()
    return {str(e): int(n) for e, n in rows}


def stuck_handoffs(engine: sa.Engine, provider: str) -> int:
    """Hand-offs left ``pending`` or ``failed`` (a crash between send and record, or a failure)."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(handoffs).where(
            handoffs.c.provider == provider,
            handoffs.c.status.in_(("pending", "failed")))).scalar_one())
