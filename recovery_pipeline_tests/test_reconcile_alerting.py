"""End to end in Dagster: provider counts over HTTP -> parity -> checks -> alerting sensor -> Slack.

Each broken case (a missing invoice, a wrongly mapped currency, a paid-after-failure invoice
counted as first-attempt success) sends exactly one alert to a local Slack stand-in, however
often the sensor ticks, and one resolved message once the provider side is fixed.
"""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pytest

from recovery_pipeline.defs.monitoring.assets import recovery_kpis
from recovery_pipeline.defs.monitoring.sensors import alerting_sensor
from recovery_pipeline.defs.provider_feedback.provider_assets import provider_counts
from recovery_pipeline.defs.reconciliation.assets import monthly_parity
from recovery_pipeline.defs.reconciliation.checks import monthly_parity_checks
from recovery_pipeline.httpserve import serve_in_thread
from recovery_pipeline.reconciliation import synthetic
from recovery_pipeline_tests._recon_helpers import (
    FakeCounts,
    counts_resources,
    provider_count_rows,
    rename_key,
    shift_provider_rows,
    slack_capture,
)


@pytest.fixture
def world(tmp_path, monkeypatch):
    wh = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(wh)) as con:
        synthetic.generate(con, 300, months=3)
        rows = provider_count_rows(synthetic.provider_rows_from_billing(con))
    fake = FakeCounts(rows)
    with serve_in_thread(fake.app()) as base, slack_capture() as slack:
        monkeypatch.setenv("ALERT_SLACK_WEBHOOK_URL", slack.url)
        resources = counts_resources(str(wh), tmp_path, base)
        instance = dg.DagsterInstance.ephemeral()  # in-memory storage: fast, per test
        yield {"fake": fake, "rows": rows, "slack": slack, "resources": resources,
               "instance": instance, "cursor": None}


def _reconcile(world):
    return dg.materialize(
        [provider_counts, monthly_parity, monthly_parity_checks, recovery_kpis],
        resources=world["resources"], instance=world["instance"], raise_on_error=False)


def _tick(world):
    ctx = dg.build_sensor_context(
        instance=world["instance"], cursor=world["cursor"],
        definitions=dg.Definitions(assets=[provider_counts, monthly_parity, recovery_kpis],
                                   asset_checks=[monthly_parity_checks], resources=world["resources"]),
        resources={k: world["resources"][k] for k in ("ops_store", "reconciliation")})
    result = alerting_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    world["cursor"] = result.cursor
    return result


def _failed_checks(result) -> dict[str, dict]:
    return {e.check_name: {k: v.value for k, v in e.metadata.items()}
            for e in result.get_asset_check_evaluations() if not e.passed}


def _month(world, i):
    return sorted({r["month"] for r in world["rows"]})[i]


def _missing_invoice(world):
    m = _month(world, 1)
    with duckdb.connect(world["resources"]["warehouse"].target) as con:
        cur, country, outcome = con.execute(
            "select i.currency, i.customer_country, o.outcome from canonical.invoices i "
            "join canonical.invoice_outcomes o using (invoice_id) where i.month = ? "
            "order by invoice_id limit 1", [m]).fetchone()
    return m, shift_provider_rows(world["rows"], m, {
        ("invoices", "total", ""): -1, ("invoices", "currency", cur): -1,
        ("invoices", "country", country): -1, ("invoice_outcomes", "outcome", outcome): -1})


def _wrong_currency(world):
    return "EUR", rename_key(world["rows"], "currency", "EUR", "EURO")


def _outcome_miscounted(world):
    m = _month(world, 2)
    return m, shift_provider_rows(world["rows"], m, {
        ("invoice_outcomes", "outcome", "paid_after_failure"): -1,
        ("invoice_outcomes", "outcome", "first_attempt_success"): +1})


@pytest.mark.parametrize("breakage, check", [
    (_missing_invoice, "invoice_counts_match_provider"),
    (_wrong_currency, "currencies_match_provider"),
    (_outcome_miscounted, "recovery_outcomes_match_provider"),
])
def test_broken_parity_alerts_once_and_resolves_once(world, breakage, check):
    ok = _reconcile(world)
    assert _failed_checks(ok) == {}
    assert "reconciliation/monthly_parity:invoice_counts_match_provider" in json.loads(
        _tick(world).cursor)["seen"]
    assert world["slack"].texts == []

    named, broken_rows = breakage(world)
    world["fake"].rows = broken_rows
    bad = _reconcile(world)
    failed = _failed_checks(bad)
    assert set(failed) == {check}
    assert named in failed[check]["summary"]
    # blocking ERROR check: the KPIs downstream of parity are not published
    materialized = {e.asset_key.to_user_string() for e in bad.get_asset_materialization_events()}
    assert "reconciliation/monthly_parity" in materialized
    assert "monitoring/recovery_kpis" not in materialized

    _tick(world)
    _tick(world)  # the condition persists: no second alert
    alerts = world["slack"].alerts()
    assert len(alerts) == 1
    assert check in alerts[0] and named in alerts[0]

    world["fake"].rows = world["rows"]
    _reconcile(world)
    _tick(world)
    _tick(world)
    assert len(world["slack"].resolutions()) == 1 and check in world["slack"].resolutions()[0]
    assert len(world["slack"].alerts()) == 1


def test_recovery_kpis_carry_a_chart_when_parity_passes(world):
    result = _reconcile(world)
    mats = {e.asset_key.to_user_string(): e for e in result.get_asset_materialization_events()}
    meta = mats["monitoring/recovery_kpis"].materialization.metadata
    assert meta["chart"].value.startswith("![recovery rate")
    assert "data:image/png;base64," in meta["chart"].value
    assert 0 < meta["recovery_rate"].value < 1
    with open(meta["chart_file"].value, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
