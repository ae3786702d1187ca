"""The alert sink and incident bookkeeping: one alert per incident, one resolution."""

from __future__ import annotations

import logging

import pytest

from recovery_pipeline.monitoring.alerts import AlertSink, Incidents
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline_tests._recon_helpers import slack_capture


@pytest.fixture
def engine(tmp_path):
    eng = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(eng)
    return eng


def test_sink_reads_slack_and_smtp_from_environment():
    sink = AlertSink.from_env({"ALERT_SLACK_WEBHOOK_URL": "http://127.0.0.1:1/x",
                               "ALERT_SMTP_HOST": "mail.local", "ALERT_SMTP_PORT": "2525",
                               "ALERT_SMTP_FROM": "a@b", "ALERT_SMTP_TO": "x@y, z@w"})
    assert sink.remote_channels == ["slack", "smtp"]
    assert sink.smtp.port == 2525 and sink.smtp.recipients == ("x@y", "z@w")
    assert AlertSink.from_env({}).remote_channels == []


def test_firing_twice_sends_one_alert_and_resolving_sends_one_resolution(engine):
    with slack_capture() as cap:
        inc = Incidents(engine, AlertSink(slack_webhook_url=cap.url))
        assert inc.fire("check:x:invoice_counts_match_provider", "ERROR", "2026-03 differs by 1")
        assert not inc.fire("check:x:invoice_counts_match_provider", "ERROR", "2026-03 differs by 1")
        assert inc.resolve("check:x:invoice_counts_match_provider")
        assert not inc.resolve("check:x:invoice_counts_match_provider")
        assert len(cap.alerts()) == 1 and "2026-03 differs by 1" in cap.alerts()[0]
        assert len(cap.resolutions()) == 1 and "invoice_counts_match_provider" in cap.resolutions()[0]


def test_incident_reopens_after_resolution(engine):
    with slack_capture() as cap:
        inc = Incidents(engine, AlertSink(slack_webhook_url=cap.url))
        inc.fire("k", "WARN", "bad")
        inc.resolve("k")
        assert inc.fire("k", "WARN", "bad again")
        assert [("bad" in t) for t in cap.alerts()] == [True, True]


def test_alert_is_retried_when_slack_is_down(engine):
    with slack_capture(fail=True) as cap:
        inc = Incidents(engine, AlertSink(slack_webhook_url=cap.url))
        assert not inc.fire("k", "ERROR", "bad")  # not delivered: the claim is undone
        assert inc.firing() == {}
        cap.fail = False
        assert inc.fire("k", "ERROR", "bad")
        assert len(cap.alerts()) == 1


def test_log_is_always_a_channel_and_the_webhook_url_is_never_logged(engine, caplog):
    secret_url = "http://127.0.0.1:9/services/T000/SECRET-TOKEN"
    with caplog.at_level(logging.WARNING, logger="recovery_pipeline.alerts"):
        delivered = AlertSink(slack_webhook_url=secret_url, timeout_s=0.5).send("disk full", "ERROR")
    assert delivered == ["log"]
    assert "disk full" in caplog.text and "SECRET-TOKEN" not in caplog.text


def test_sync_resolves_keys_that_are_no_longer_bad(engine):
    with slack_capture() as cap:
        inc = Incidents(engine, AlertSink(slack_webhook_url=cap.url))
        inc.sync("polling_stopped:", {"polling_stopped:a": ("ERROR", "a stopped"),
                                      "polling_stopped:b": ("ERROR", "b stopped")})
        result = inc.sync("polling_stopped:", {"polling_stopped:b": ("ERROR", "b stopped")})
        assert result == {"fired": [], "resolved": ["polling_stopped:a"]}
        assert len(cap.alerts()) == 2 and len(cap.resolutions()) == 1


@pytest.mark.postgres
def test_incidents_work_on_a_postgres_ops_store(pg_url):
    eng = create_ops_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://"))
    init_ops_store(eng)
    try:
        with slack_capture() as cap:
            inc = Incidents(eng, AlertSink(slack_webhook_url=cap.url))
            assert inc.fire("dead_letters_piling_up", "ERROR", "12 dead letters")
            assert not inc.fire("dead_letters_piling_up", "ERROR", "12 dead letters")
            assert inc.resolve("dead_letters_piling_up")
            assert len(cap.alerts()) == 1 and len(cap.resolutions()) == 1
    finally:
        eng.dispose()
