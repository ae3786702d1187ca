"""``ingest-stripe-events`` on the accepted file shapes, and ``stripe-check``."""

from __future__ import annotations

import json

import sqlalchemy as sa

from recovery_pipeline.cli import main
from recovery_pipeline.opsstore import create_ops_engine
from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.stripe_connector.store import build_rows
from recovery_pipeline_tests import stripe_testkit as k


def _events():
    evs = k.failed_then_paid_events()
    evs.append(k.event("customer.subscription.created", k.subscription(), k.T0 - 86400))
    evs.append(k.event("plan.created", {"id": "plan_1", "object": "plan"}, k.T0))
    return evs


def test_ingest_stripe_events_reads_single_array_lines_and_list_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    e = _events()
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "a_single.json").write_text(json.dumps(e[0]))
    (folder / "b_array.json").write_text(json.dumps(e[1:3]))
    (folder / "c_lines.jsonl").write_text("\n".join(json.dumps(x) for x in e[3:4]) + "\n")
    listing = tmp_path / "events_list.json"  # `stripe events list` output
    listing.write_text(json.dumps({"object": "list", "url": "/v1/events", "has_more": False, "data": e[4:]}))
    url = f"sqlite:///{tmp_path / 'ops.sqlite'}"

    code = main(["ingest-stripe-events", str(folder), str(listing), "--ops-store-url", url])
    out = capsys.readouterr().out
    assert code == 0
    assert "stored 4, skipped 1, duplicates 0, rejected 0" in out
    assert "event type plan.created is not used by the canonical model" in out
    rows = build_rows(create_ops_engine(url))
    assert rows.invoices[0]["status"] == "paid" and len(rows.transactions) == 2

    code = main(["ingest-stripe-events", str(folder), "--ops-store-url", url, "--quiet"])
    assert "stored 0, skipped 0, duplicates 4" in capsys.readouterr().out
    with create_ops_engine(url).connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(webhook_inbox)).scalar_one() == 5


def test_ingest_stripe_events_reports_unreadable_file_and_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json\n")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_events()[0]))
    code = main(["ingest-stripe-events", str(bad), str(good), "--ops-store-url",
                 f"sqlite:///{tmp_path / 'ops.sqlite'}"])
    out = capsys.readouterr().out
    assert code == 1
    assert "unreadable" in out and "stored 1" in out
