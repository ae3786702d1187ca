"""``recovery-pipeline generate`` writes the billing database and the export folder."""

from __future__ import annotations

import json

import sqlalchemy as sa

from recovery_pipeline.cli import main


def test_generate_command_writes_the_database_and_monthly_export_files(data_env, capsys):
    code = main(["generate", "--seed", "7", "--months", "2", "--invoices-per-month", "150",
                 "--end", "2025-01-01", "--format", "parquet,csv", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    exports = data_env.exports_dir
    for entity in ("customers", "subscriptions", "invoices", "transactions"):
        names = sorted(p.name for p in (exports / entity).iterdir())
        assert names == ["2024-11.csv", "2024-11.parquet", "2024-12.csv", "2024-12.parquet"], entity
    engine = sa.create_engine(data_env.billing_db_url)
    with engine.connect() as c:
        n_invoices = c.execute(sa.text("select count(*) from invoices")).scalar()
        seed = c.execute(sa.text("select value from billing_meta where key = 'gateway_seed'")).scalar()
    engine.dispose()
    assert n_invoices == summary["totals"]["invoices"] >= 300
    assert seed == "7"
    assert set(summary["bad_rows"]) and all(v >= 1 for v in summary["bad_rows"].values())


def test_generate_command_without_database_writes_only_exports(data_env, capsys):
    code = main(["generate", "--months", "1", "--invoices-per-month", "50", "--end", "2025-01-01",
                 "--no-db", "--format", "jsonl", "--bad-row-fraction", "0"])
    assert code == 0
    assert "billing history" in capsys.readouterr().out
    assert not (data_env.data_dir / "billing.sqlite").exists()
    assert (data_env.exports_dir / "invoices" / "2024-12.jsonl").stat().st_size > 0
