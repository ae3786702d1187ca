"""Known secret values never leak; customer emails are masked in audit previews.

The whole demo runs in-process with recognizable secrets in the environment: ``recovery-pipeline
demo`` at a tiny size (generate -> backfill through Dagster on a tmp DAGSTER_HOME -> the loop:
push to the provider sandbox, signed webhooks to the receiver, polling, live execution through the
billing engine's HTTP API with its API key, incremental sync, reconciliation), then more signed
and forged deliveries to a receiver on the same ops store. Then every place a value could end up
is read back and searched for each secret: captured logs and stdout/stderr, every event record of
every Dagster run (asset materialization metadata included), every text column of every table in
the ops store, the billing database and the DuckDB warehouse, and every file under the data dir.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

import httpx
import sqlalchemy as sa

from recovery_pipeline import cli
from recovery_pipeline.execution.reports import audit_summary
from recovery_pipeline.httpserve import free_port, serve_in_thread
from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
from recovery_pipeline.opsstore.models import executed_actions
from recovery_pipeline.settings import load_settings
from recovery_pipeline.webhooks.app import ReceiverConfig, create_app
from recovery_pipeline.webhooks.signing import signed_headers
from recovery_pipeline_tests._fuzz_support import duckdb_text_values, sql_text_values
from recovery_pipeline_tests._webhook_support import event_body

SECRETS = {
    "PROVIDER_API_KEY": "sk_prov_SECRETa1b2c3d4e5",
    "SLICKER_WEBHOOK_TOKEN": "slk_tok_SECRETf6g7h8i9",
    "SLICKER_WEBHOOK_BASIC": "merchant:SECRETbasicpw42",
    "REVTAIN_WEBHOOK_SECRET": "whsec_rvt_SECRETj1k2l3",
    "BUTTER_WEBHOOK_SECRET": "btr_SECRETm4n5o6p7",
    "STANDARD_WEBHOOK_SECRET": "whsec_U0VDUkVUc3RhbmRhcmRrZXkxMjM0NQ==",
    "STRIPE_WEBHOOK_SECRET": "whsec_stripe_SECRETq8r9s0",
    "STRIPE_API_KEY": "rk_test_SECRETt1u2v3w4",
    "BILLING_ENGINE_API_KEY": "bek_SECRETx5y6z7a8",
    # loopback (nothing listens on port 9): an alert the loop fires must not leave the machine
    "ALERT_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/services/T000/B000/SECRETslacktoken9",
    "ALERT_SMTP_PASSWORD": "smtp_SECRETpw0000",
}
# what is searched for: each whole value, and the distinctive part of each
NEEDLES = sorted(set(SECRETS.values()) | {"SECRETslacktoken9", "SECRETbasicpw42"})


def _leaks(texts, where: str) -> list[str]:
    found = []
    for label, text in texts:
        for needle in NEEDLES:
            if needle in text:
                found.append(f"{where}: {label} holds {needle[:12]}...")
    return found


def _dagster_texts(dagster_home):
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        runs = instance.get_runs()
        yield "runs", str([(r.run_id, r.run_config, r.tags) for r in runs])
        for run in runs:
            for record in instance.all_logs(run.run_id):
                yield f"run {run.run_id[:8]} {record.dagster_event_type}", repr(record)
    finally:
        instance.dispose()


def test_demo_flow_with_known_secrets_leaves_none_in_logs_runs_metadata_or_stores(
        tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    monkeypatch.setenv("RECOVERY_DATA_DIR", str(data))
    for var in ("DAGSTER_HOME", "RECOVERY_WAREHOUSE", "RECOVERY_OPS_STORE_URL", "RECOVERY_BILLING_DB_URL",
                "RECOVERY_EXPORTS_DIR", "PROVIDER_BASE_URL", "RECEIVER_URL", "BILLING_ENGINE_URL"):
        monkeypatch.delenv(var, raising=False)
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    # our own loopback ports: never another test's sandbox on the default one
    monkeypatch.setenv("PROVIDER_BASE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("RECEIVER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("BILLING_ENGINE_URL", f"http://127.0.0.1:{free_port()}")
    settings = load_settings()
    assert cli.main(["demo", "--months", "1", "--invoices-per-month", "12", "--bad-row-fraction", "0.05"]) == 0

    # signed deliveries to the receiver with the same secrets, into the same ops store
    cfg = ReceiverConfig.from_env()
    with serve_in_thread(create_app(cfg)) as url:
        for provider, secret in (("slicker", SECRETS["SLICKER_WEBHOOK_TOKEN"]),
                                 ("revtain", SECRETS["REVTAIN_WEBHOOK_SECRET"]),
                                 ("butter", SECRETS["BUTTER_WEBHOOK_SECRET"]),
                                 ("standard", SECRETS["STANDARD_WEBHOOK_SECRET"]),
                                 ("stripe", SECRETS["STRIPE_WEBHOOK_SECRET"])):
            body = event_body(provider, f"evt_secret_{provider}")
            headers = signed_headers(provider, secret, body, event_id=f"evt_secret_{provider}",
                                     event_type="recovery_action")
            assert httpx.post(f"{url}/webhooks/{provider}", content=body, headers=headers).status_code == 200
            bad = dict(headers)
            for h in list(bad):
                if h.lower() in ("authorization", "x-revtain-signature", "x-butter-webhook-signature",
                                 "stripe-signature", "webhook-signature"):
                    bad[h] = bad[h][:-3] + "xyz"
            assert httpx.post(f"{url}/webhooks/{provider}", content=body, headers=bad).status_code == 401

    leaks = []
    leaks += _leaks([("caplog", caplog.text)], "logs")
    out, err = capfd.readouterr()
    leaks += _leaks([("stdout", out), ("stderr", err)], "output")
    leaks += _leaks(_dagster_texts(settings.dagster_home), "dagster")
    leaks += _leaks(((f"{t}.{c}", v) for t, c, v in sql_text_values(settings.ops_store_url)), "ops store")
    leaks += _leaks(((f"{t}.{c}", v) for t, c, v in sql_text_values(settings.billing_db_url)), "billing db")
    leaks += _leaks(((f"{t}.{c}", v) for t, c, v in duckdb_text_values(settings.warehouse)), "warehouse")
    for path in data.rglob("*"):  # dlt state, dagster storage, compute logs: every file under data/
        if path.is_file() and path.stat().st_size < 20_000_000:
            leaks += _leaks([(str(path.relative_to(data)), path.read_bytes().decode("latin-1"))], "file")
    assert not leaks, leaks[:10]
    # customer emails (the generator's are @example.com) appear in no run event / asset metadata
    # unmasked: previews show them as j***@example.com
    email = re.compile(r"[A-Za-z0-9._%+-]{2,}@example\.com")
    shown = [(label, m.group(0)) for label, text in _dagster_texts(settings.dagster_home)
             for m in email.finditer(text)]
    assert not shown, shown[:5]

    # the scan would have seen them: the runs left events, the inbox holds the deliveries with
    # their credential headers redacted, and a planted secret is found by the same scan
    assert any("ASSET_MATERIALIZATION" in label for label, _ in _dagster_texts(settings.dagster_home))
    eng = sa.create_engine(settings.ops_store_url)
    with eng.begin() as c:
        headers = [json.loads(h) for h in
                   c.execute(sa.text("select headers_json from webhook_inbox")).scalars().all()]
        c.execute(sa.text("insert into webhook_rejections (provider, status_code, reason, received_at) "
                          "values ('x', 401, :r, '2026-01-01 00:00:00')"), {"r": SECRETS["STRIPE_API_KEY"]})
    eng.dispose()
    assert len(headers) >= 5
    with eng.connect() as c:  # the loop did push and execute (so the scans above saw real traffic)
        assert c.execute(sa.text("select count(*) from request_log")).scalar_one() > 0
        assert c.execute(sa.text("select count(*) from executed_actions")).scalar_one() > 0
    eng.dispose()
    assert {h.get("authorization") for h in headers if "authorization" in h} == {"[redacted]"}
    assert {h.get("stripe-signature") for h in headers if "stripe-signature" in h} == {"[redacted]"}
    planted = _leaks(((f"{t}.{c}", v) for t, c, v in sql_text_values(settings.ops_store_url)), "ops store")
    assert planted == ["ops store: webhook_rejections.reason holds rk_test_SECR..."]


def test_customer_emails_are_masked_in_the_audit_preview(tmp_path):
    eng = create_ops_engine(f"sqlite:///{tmp_path / 'ops.db'}")
    init_ops_store(eng)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    with eng.begin() as c:
        c.execute(executed_actions.insert().values(
            source="webhook", source_event_id="evt_1", provider="slicker", invoice_id="in_1",
            customer_id="cus_1", instruction="ACTION_SUGGESTION_RETRY", business_action="retry_now",
            mode="shadow", received_at=now, executed_at=now, result="shadowed", attempts=1,
            before_state=json.dumps({"email": "jane.doe@example.com"}),
            detail="notified jane.doe@example.com and bob@shop.example.org"))
    preview = audit_summary(eng)["preview"]
    eng.dispose()
    text = json.dumps(preview)
    assert "jane.doe@example.com" not in text and "bob@shop.example.org" not in text
    assert "j***@example.com" in text and "b***@shop.example.org" in text
    assert preview[0]["invoice_id"] == "in_1"  # the row is still there, only the address is masked
