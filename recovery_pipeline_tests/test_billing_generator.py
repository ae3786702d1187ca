"""The demo billing history generator: determinism, realism, bad rows, exports == database."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from recovery_pipeline.billing_engine import schema
from recovery_pipeline.billing_engine.exports import arrow_schema, read_export
from recovery_pipeline.billing_engine.generator import (
    BAD_ROW_REASONS,
    ENTITY_ORDER,
    ZERO_DECIMAL_CURRENCIES,
    GenerateConfig,
    generate,
    luhn_valid,
)

END = date(2025, 1, 1)
WINDOW_START = datetime(2024, 9, 1, tzinfo=UTC)
WINDOW_END = datetime(2025, 1, 1, tzinfo=UTC)


def _read_all(root, entity: str, fmt: str = "parquet") -> pa.Table:
    files = sorted((root / entity).glob(f"*.{fmt}"))
    assert files, f"no {fmt} files for {entity}"
    return pa.concat_tables([read_export(f) for f in files])


def _rows(table: pa.Table, key: str) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r[key])


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Four months, 600 invoices a month, bad rows on, every export format and a SQLite db."""
    root = tmp_path_factory.mktemp("history")
    cfg = GenerateConfig(seed=11, months=4, invoices_per_month=600, end=END,
                         bad_row_fraction=0.01, chunk_size=250)
    summary = generate(cfg, db_url=f"sqlite:///{root / 'billing.sqlite'}",
                       exports_dir=root / "exports", formats=("parquet", "csv", "jsonl"))
    tables = {e: _read_all(root / "exports", e) for e in ENTITY_ORDER}
    bad_ids = {r["record_id"] for rows in summary.bad_rows.values() for r in rows}
    good = {e: t.filter(pc.invert(pc.is_in(t[schema.PRIMARY_KEYS[e]], pa.array(sorted(bad_ids)))))
            for e, t in tables.items()}
    return {"root": root, "summary": summary, "tables": tables, "good": good, "cfg": cfg,
            "db_url": f"sqlite:///{root / 'billing.sqlite'}"}


def test_same_seed_generates_identical_history(tmp_path):
    cfg = GenerateConfig(seed=3, months=2, invoices_per_month=300, end=END, bad_row_fraction=0.01)
    generate(cfg, exports_dir=tmp_path / "a")
    generate(cfg, exports_dir=tmp_path / "b")
    for entity in ENTITY_ORDER:
        assert _read_all(tmp_path / "a", entity).equals(_read_all(tmp_path / "b", entity)), entity


def test_different_seed_generates_a_different_history(tmp_path):
    generate(GenerateConfig(seed=3, months=1, invoices_per_month=300, end=END), exports_dir=tmp_path / "a")
    generate(GenerateConfig(seed=4, months=1, invoices_per_month=300, end=END), exports_dir=tmp_path / "b")
    a, b = _read_all(tmp_path / "a", "invoices"), _read_all(tmp_path / "b", "invoices")
    assert set(a["invoice_id"].to_pylist()).isdisjoint(b["invoice_id"].to_pylist())
    assert a["amount_minor"].to_pylist() != b["amount_minor"].to_pylist()


def test_small_chunks_give_the_same_history_as_one_big_chunk(tmp_path):
    base = dict(seed=5, months=2, invoices_per_month=500, end=END, bad_row_fraction=0.01)
    generate(GenerateConfig(**base, chunk_size=37), exports_dir=tmp_path / "small")
    generate(GenerateConfig(**base, chunk_size=10_000), exports_dir=tmp_path / "big")
    for entity in ENTITY_ORDER:
        key = schema.PRIMARY_KEYS[entity]
        assert _rows(_read_all(tmp_path / "small", entity), key) == \
            _rows(_read_all(tmp_path / "big", entity), key), entity


def test_each_month_has_the_requested_number_of_good_invoices(history):
    inv = history["good"]["invoices"]
    months = pc.strftime(inv["created_at"], format="%Y-%m").to_pylist()
    assert {m: months.count(m) for m in set(months)} == {
        "2024-09": 600, "2024-10": 600, "2024-11": 600, "2024-12": 600}


def test_every_invoice_outcome_kind_is_present(history):
    inv, txn = history["good"]["invoices"], history["good"]["transactions"]
    statuses = set(inv["status"].to_pylist())
    assert statuses == schema.INVOICE_STATES  # open, paid, uncollectible, void, refunded
    failed_invoices = set(txn.filter(pc.equal(txn["status"], "failed"))["invoice_id"].to_pylist())
    paid = inv.filter(pc.equal(inv["status"], "paid"))["invoice_id"].to_pylist()
    paid_after_failure = [i for i in paid if i in failed_invoices]
    first_attempt_success = [i for i in paid if i not in failed_invoices]
    assert paid_after_failure and first_attempt_success
    # open invoices are recent: only in the last month of the window
    open_months = set(pc.strftime(inv.filter(pc.equal(inv["status"], "open"))["created_at"],
                                  format="%Y-%m").to_pylist())
    assert open_months == {"2024-12"}


def test_refunded_invoices_keep_their_succeeded_charge_and_gain_a_refund_row(history):
    inv, txn = history["good"]["invoices"], history["good"]["transactions"]
    refunded = set(inv.filter(pc.equal(inv["status"], "refunded"))["invoice_id"].to_pylist())
    by_invoice: dict[str, list[str]] = {}
    for r in txn.to_pylist():
        if r["invoice_id"] in refunded:
            by_invoice.setdefault(r["invoice_id"], []).append(r["status"])
    assert refunded and all(sorted(v) == ["refunded", "succeeded"] for v in by_invoice.values())


def test_retries_are_separate_transactions_with_increasing_attempts_and_times(history):
    txn = history["good"]["transactions"]
    charges: dict[str, list[tuple]] = {}
    for r in txn.to_pylist():
        if r["status"] != "refunded":
            charges.setdefault(r["invoice_id"], []).append((r["created_at"], r["attempt_number"]))
    multi = {k: sorted(v) for k, v in charges.items() if len(v) > 1}
    assert len(multi) > 20
    for attempts in multi.values():
        assert [a for _t, a in attempts] == list(range(1, len(attempts) + 1))
        assert all(t1 < t2 for (t1, _), (t2, _) in zip(attempts, attempts[1:], strict=False))
    # some retries land in the month after their invoice's month (a file of their own month)
    inv_month = dict(zip(history["good"]["invoices"]["invoice_id"].to_pylist(),
                         pc.strftime(history["good"]["invoices"]["created_at"], format="%Y-%m").to_pylist(),
                         strict=True))
    later = [k for k, v in multi.items() if v[-1][0].strftime("%Y-%m") != inv_month[k]]
    assert later


def test_failures_carry_real_decline_codes_soft_and_hard(history):
    txn = history["good"]["transactions"]
    failed = txn.filter(pc.equal(txn["status"], "failed"))
    codes = set(failed["decline_code"].to_pylist())
    assert {"insufficient_funds", "do_not_honor", "expired_card", "generic_decline"} <= codes
    assert codes & {"fraudulent", "lost_card", "stolen_card", "pickup_card"}
    assert failed["decline_code"].null_count == 0 and failed["decline_message"].null_count == 0
    ok = txn.filter(pc.equal(txn["status"], "succeeded"))
    assert ok["decline_code"].null_count == ok.num_rows


def test_history_spans_currencies_countries_and_both_billing_periods(history):
    subs, custs = history["good"]["subscriptions"], history["good"]["customers"]
    assert len(set(subs["currency"].to_pylist())) >= 6
    assert {"USD", "EUR", "GBP", "JPY"} <= set(subs["currency"].to_pylist())
    assert len(set(custs["country"].to_pylist())) >= 8
    assert set(subs["billing_period_unit"].to_pylist()) == {"month", "year"}
    assert all(c == c.upper() and len(c) == 3 for c in history["good"]["invoices"]["currency"].to_pylist())
    # zero-decimal currency: amounts are whole yen, priced in the thousands not hundreds of thousands
    jpy = [r["amount_minor"] for r in subs.to_pylist() if r["currency"] in ZERO_DECIMAL_CURRENCIES]
    assert jpy and all(1000 <= a <= 200_000 for a in jpy)


def test_timestamps_are_utc_inside_the_window_and_updates_never_precede_creation(history):
    for entity in ENTITY_ORDER:
        t = history["good"][entity]
        assert t.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
        rows = t.to_pylist()
        assert all(WINDOW_START <= r["created_at"] < WINDOW_END for r in rows), entity
        assert all(r["created_at"] <= r["updated_at"] < WINDOW_END for r in rows), entity


def test_invoice_attempt_count_matches_its_charge_transactions(history):
    counts: dict[str, int] = {}
    for r in history["good"]["transactions"].to_pylist():
        if r["status"] != "refunded":
            counts[r["invoice_id"]] = counts.get(r["invoice_id"], 0) + 1
    for inv in history["good"]["invoices"].to_pylist():
        assert inv["attempt_count"] == counts.get(inv["invoice_id"], 0)


def test_good_rows_hold_tokens_and_bins_never_card_numbers(history):
    txn = history["good"]["transactions"].to_pylist()
    assert all(r["payment_method_token"].startswith("pm_") for r in txn if r["gateway"] != "external")
    bins = [r["card_bin"] for r in txn if r["card_bin"] is not None]
    assert bins and all(len(b) == 6 and b.isdigit() for b in bins)
    for r in txn:
        for col in ("payment_method_token", "decline_message", "card_bin", "card_fingerprint"):
            assert not luhn_valid(str(r[col] or "")), (col, r[col])


def test_bad_rows_one_kind_per_reason_are_in_the_manifest_exports_and_database(history):
    manifest = history["summary"].bad_rows
    assert set(manifest) == set(BAD_ROW_REASONS)
    tables = history["tables"]
    by_id = {e: {r[schema.PRIMARY_KEYS[e]]: r for r in tables[e].to_pylist()} for e in ENTITY_ORDER}
    customers = set(by_id["customers"])
    good_invoices = set(history["good"]["invoices"]["invoice_id"].to_pylist())
    now = datetime.now(UTC)
    defects = {
        "missing_currency": lambda r: r["currency"] is None,
        "unknown_currency": lambda r: r["currency"] == "XXQ",
        "negative_amount": lambda r: r["amount_minor"] < 0,
        "unknown_state": lambda r: r["status"] not in schema.INVOICE_STATES,
        "orphan_invoice": lambda r: r["customer_id"] not in customers,
        "orphan_transaction": lambda r: r["invoice_id"] not in good_invoices,
        "future_timestamp": lambda r: r["created_at"] > now,
        "card_number_like": lambda r: luhn_valid(r["payment_method_token"]),
    }
    engine = sa.create_engine(history["db_url"])
    with engine.connect() as conn:
        for reason, entries in manifest.items():
            assert entries, reason
            for e in entries:
                row = by_id[e["entity"]][e["record_id"]]
                assert defects[reason](row), (reason, row)
                table = schema.ENTITIES[e["entity"]]
                key = table.c[schema.PRIMARY_KEYS[e["entity"]]]
                assert conn.execute(sa.select(sa.func.count()).where(key == e["record_id"])).scalar() == 1
    engine.dispose()


def test_without_bad_row_fraction_no_row_has_a_quarantine_defect(tmp_path):
    summary = generate(GenerateConfig(seed=9, months=2, invoices_per_month=400, end=END),
                       exports_dir=tmp_path)
    assert summary.bad_rows == {}
    inv = _read_all(tmp_path, "invoices").to_pylist()
    txn = _read_all(tmp_path, "transactions").to_pylist()
    customers = set(_read_all(tmp_path, "customers")["customer_id"].to_pylist())
    subs = set(_read_all(tmp_path, "subscriptions")["subscription_id"].to_pylist())
    invoice_ids = {r["invoice_id"] for r in inv}
    assert all(r["currency"] and len(r["currency"]) == 3 and r["amount_minor"] > 0 for r in inv)
    assert all(r["status"] in schema.INVOICE_STATES for r in inv)
    assert all(r["customer_id"] in customers and r["subscription_id"] in subs for r in inv)
    assert all(r["invoice_id"] in invoice_ids and r["status"] in schema.TRANSACTION_STATES for r in txn)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_every_export_format_holds_the_same_rows_as_parquet(history, fmt):
    root = history["root"] / "exports"
    for entity in ENTITY_ORDER:
        key = schema.PRIMARY_KEYS[entity]
        other = _read_all(root, entity, fmt).cast(arrow_schema(entity))
        assert _rows(other, key) == _rows(history["tables"][entity], key), entity


def _db_table(url: str, entity: str) -> list[dict]:
    engine = sa.create_engine(url)
    table = schema.ENTITIES[entity]
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(table))]
    engine.dispose()
    for r in rows:
        for k, v in r.items():
            if isinstance(v, datetime):
                r[k] = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    return sorted(rows, key=lambda r: r[schema.PRIMARY_KEYS[entity]])


def test_exports_hold_the_same_rows_as_the_database(history):
    for entity in ENTITY_ORDER:
        key = schema.PRIMARY_KEYS[entity]
        assert _db_table(history["db_url"], entity) == _rows(history["tables"][entity], key), entity


def test_postgres_billing_database_holds_the_same_history(pg_url, tmp_path):
    cfg = GenerateConfig(seed=13, months=2, invoices_per_month=300, end=END, bad_row_fraction=0.01)
    summary = generate(cfg, db_url=pg_url, exports_dir=tmp_path)
    assert summary.total("invoices") > 600
    for entity in ENTITY_ORDER:
        key = schema.PRIMARY_KEYS[entity]
        assert _db_table(pg_url, entity) == _rows(_read_all(tmp_path, entity), key), entity
