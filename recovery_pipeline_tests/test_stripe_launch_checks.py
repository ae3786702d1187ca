"""``stripe-check``: each launch condition verified, failed, or honestly 'cannot verify'."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from recovery_pipeline.cli import main
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.stripe_connector.launch_checks import FAILED, UNKNOWN, VERIFIED, run_checks
from recovery_pipeline.stripe_connector.store import ingest_events, process_inbox
from recovery_pipeline.webhooks.inbox import inbox_row
from recovery_pipeline_tests import stripe_testkit as k

DAY = 86400
NOW = datetime.fromtimestamp(k.T0 + 9 * DAY, UTC)
GOOD_ENV = {"STRIPE_API_KEY": "rk_test_abc", "STRIPE_WEBHOOK_SECRET": "whsec_realistic_secret"}


def _engine(tmp_path):
    eng = create_ops_engine(f"sqlite:///{tmp_path / 'ops.sqlite'}")
    init_ops_store(eng)
    return eng


def _by_name(checks):
    return {c.name.split(" ")[0]: c for c in checks}


def _receive(eng, events, received_at):
    """Store events as the receiver does (verified, headers redacted), then apply them."""
    with eng.begin() as c:
        for ev in events:
            c.execute(webhook_inbox.insert().values(**inbox_row(
                "stripe", ev["id"], ev["type"], json.dumps({"stripe-signature": "[redacted]"}),
                json.dumps(ev).encode(), received_at=received_at)))
    process_inbox(eng)


def _eight_days_without_retries():
    return [k.event("invoice.finalized", k.invoice(f"in_{d}", created=k.T0 + d * DAY), k.T0 + d * DAY)
            for d in range(9)] + [k.event("invoice.payment_failed", k.invoice("in_8", attempt_count=1,
                                                                              created=k.T0 + 8 * DAY),
                                          k.T0 + 8 * DAY + 60)]


def test_all_launch_conditions_verified_from_received_events(tmp_path):
    eng = _engine(tmp_path)
    _receive(eng, _eight_days_without_retries(), received_at=NOW)
    checks = run_checks(eng, env=GOOD_ENV, now=NOW)
    assert [c.status for c in checks] == [VERIFIED] * 5, [c.detail for c in checks]


def test_smart_retries_detected_from_a_retried_invoice_with_a_next_attempt(tmp_path):
    eng = _engine(tmp_path)
    ingest_events(eng, [k.event("invoice.payment_failed", k.invoice(attempt_count=2, next_payment_attempt=k.T0 + DAY),
                                k.T0)])
    c = _by_name(run_checks(eng, env=GOOD_ENV, now=NOW))["Smart"]
    assert c.status == FAILED and "in_1" in c.detail


def test_nothing_received_cannot_verify_retries_and_fails_the_rest(tmp_path):
    eng = _engine(tmp_path)
    checks = run_checks(eng, env={}, now=NOW)
    assert [c.status for c in checks] == [UNKNOWN, FAILED, FAILED, FAILED, FAILED]


def test_events_replayed_from_files_do_not_prove_the_endpoint(tmp_path):
    eng = _engine(tmp_path)
    ingest_events(eng, k.failed_then_paid_events())
    checks = _by_name(run_checks(eng, env={"STRIPE_API_KEY": "sk_live_full"}, now=NOW))
    assert checks["webhook"].status == UNKNOWN and "replayed from files" in checks["webhook"].detail
    assert checks["7"].status == FAILED  # three days of events only
    assert checks["restricted"].status == FAILED and "full secret key" in checks["restricted"].detail


def test_stripe_check_cli_prints_each_check_and_fails_when_one_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("STRIPE_API_KEY", "rk_test_abc")
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    _engine(tmp_path)
    code = main(["stripe-check", "--ops-store-url", url, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [c["status"] for c in out] == [UNKNOWN, FAILED, FAILED, VERIFIED, FAILED]
    assert "rk_test_abc" not in json.dumps(out)  # key values are never printed
