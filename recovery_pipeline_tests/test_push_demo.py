"""The demo's push step: sandbox on loopback, history pushed, provider counts equal billing counts."""

from __future__ import annotations

import io

from rich.console import Console

from recovery_pipeline.commands.push import demo_push
from recovery_pipeline.providers.synthetic import generate
from recovery_pipeline.settings import load_settings
from recovery_pipeline_tests.provider_fixtures import make_canonical_duckdb


def test_demo_push_prints_totals_and_provider_counts_match_billing(data_env, monkeypatch, free_port):
    monkeypatch.setenv("PROVIDER_BASE_URL", f"http://127.0.0.1:{free_port}")
    settings = load_settings()
    data = generate(150, seed=17)
    make_canonical_duckdb(settings.duckdb_path, data)
    buf = io.StringIO()
    out = demo_push(Console(file=buf, width=160), settings, rps=500)
    text = buf.getvalue()
    assert "Push to slicker" in text and "dead letters" in text
    assert out["push"]["invoices"]["records_sent"] == 150
    assert out["provider"] == out["billing"] and sum(
        m["invoices"] for m in out["billing"].values()) == 150
