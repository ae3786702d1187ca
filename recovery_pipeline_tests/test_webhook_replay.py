"""Replay: select stored inbox events by id / time range / provider and mark them pending again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from recovery_pipeline.cli import main as cli_main
from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.opsstore.store import create_ops_engine, init_ops_store
from recovery_pipeline.webhooks.inbox import mark_pending, select_for_replay

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path):
    eng = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(eng)
    rows = []
    for i in range(6):
        rows.append({"provider": "revtain" if i % 2 else "slicker", "event_id": f"evt_{i}",
                     "event_type": "recovery.success", "received_at": T0 + timedelta(hours=i),
                     "headers_json": "{}", "body": "{}", "status": "processed", "attempts": 1,
                     "processed_at": T0 + timedelta(hours=i, minutes=1)})
    with eng.begin() as conn:
        conn.execute(webhook_inbox.insert(), rows)
    yield eng
    eng.dispose()


def _statuses(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(webhook_inbox.c.event_id, webhook_inbox.c.status)).all())


def test_replay_selects_by_event_id(engine):
    picked = select_for_replay(engine, event_ids=["evt_2", "evt_5", "evt_missing"])
    assert [r["event_id"] for r in picked] == ["evt_2", "evt_5"]


def test_replay_selects_by_time_range_since_inclusive_until_exclusive(engine):
    picked = select_for_replay(engine, since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=4))
    assert [r["event_id"] for r in picked] == ["evt_1", "evt_2", "evt_3"]


def test_replay_filters_combine_with_provider(engine):
    picked = select_for_replay(engine, since=T0 + timedelta(hours=1), provider="revtain")
    assert [r["event_id"] for r in picked] == ["evt_1", "evt_3", "evt_5"]


def test_replay_without_any_filter_is_refused(engine):
    with pytest.raises(ValueError):
        select_for_replay(engine)


def test_mark_pending_resets_only_the_selected_events(engine):
    picked = select_for_replay(engine, event_ids=["evt_0", "evt_4"])
    assert mark_pending(engine, [r["id"] for r in picked]) == 2
    statuses = _statuses(engine)
    assert {k for k, v in statuses.items() if v == "pending"} == {"evt_0", "evt_4"}
    with engine.connect() as conn:
        processed_at = conn.execute(sa.select(webhook_inbox.c.processed_at)
                                    .where(webhook_inbox.c.event_id == "evt_0")).scalar_one()
    assert processed_at is None


def test_replay_command_marks_the_time_range_pending(engine, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECOVERY_OPS_STORE_URL", str(engine.url))
    monkeypatch.setenv("RECOVERY_DATA_DIR", str(tmp_path / "data"))
    code = cli_main(["replay", "--since", "2026-01-05T12:00:00Z", "--until", "2026-01-05T14:00:00+00:00"])
    assert code == 0
    out = capsys.readouterr().out
    assert "2 event(s) selected, 2 marked pending" in out and "evt_2" in out and "evt_3" in out
    assert {k for k, v in _statuses(engine).items() if v == "pending"} == {"evt_2", "evt_3"}


def test_replay_command_dry_run_changes_nothing(engine, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECOVERY_OPS_STORE_URL", str(engine.url))
    monkeypatch.setenv("RECOVERY_DATA_DIR", str(tmp_path / "data"))
    assert cli_main(["replay", "--event-id", "evt_1", "--dry-run"]) == 0
    assert "1 event(s) selected (dry run" in capsys.readouterr().out
    assert set(_statuses(engine).values()) == {"processed"}
