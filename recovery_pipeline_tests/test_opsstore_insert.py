"""try_insert tells a new row from a duplicate on SQLite and on PostgreSQL (psycopg 3)."""

import pytest

from recovery_pipeline.monitoring.alerts import AlertSink, Incidents
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import control_flags
from recovery_pipeline.opsstore.store import try_insert, utcnow


@pytest.fixture(params=["sqlite", "postgres"])
def ops_engine(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = create_ops_engine(url)
    init_ops_store(engine)
    yield engine
    engine.dispose()


def test_try_insert_reports_new_then_duplicate(ops_engine):
    with ops_engine.begin() as conn:
        first = try_insert(conn, control_flags, name="kill_switch", value="on", updated_at=utcnow())
        second = try_insert(conn, control_flags, name="kill_switch", value="off", updated_at=utcnow())
    assert (first, second) == (True, False)
    with ops_engine.connect() as conn:
        assert conn.execute(control_flags.select()).mappings().one()["value"] == "on"


def test_a_still_firing_incident_alerts_once_on_every_store(ops_engine):
    sent = []

    class _Sink(AlertSink):
        def send(self, text, severity):
            sent.append(text)
            return ["log"]

    incidents = Incidents(ops_engine, _Sink())
    results = [incidents.fire("dead_letters_piling_up", "ERROR", "12 dead letters") for _ in range(3)]
    assert results == [True, False, False]
    assert len(sent) == 1
