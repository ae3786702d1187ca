"""Fuzzed billing export rows through the real raw load + canonical build (hypothesis).

Each example writes one month of export files (CSV, JSONL or all-text Parquet) holding a few good
rows plus a batch of fuzzed ones: missing / unknown / lower-case currencies, negative and huge
amounts, unparseable numbers, unknown states, orphan ids, future and garbage timestamps, random
unicode, Luhn-valid card numbers pasted into free-text / card-like fields, empty strings, nulls and
repeated primary keys. Then ``load_raw`` + ``run_month`` must:

* not crash;
* account for every record: each distinct primary key of the month is in the canonical table or
  in ``canonical.quarantine`` (with a non-empty reason and detail), never both, never neither;
  rows without a primary key are quarantined (``invalid_value``, record_id null);
* leave no card number anywhere: no injected card number and no Luhn-valid 13-19 digit number in
  any text column of any table of the DuckDB warehouse, nor in the captured logs and output.

The files go through the raw load's own reader (``ingest.exports.read_export_file``: DuckDB read,
contract conform, card masking) into ``billing_raw`` and then ``sqlmodels.runner.run_month``;
only dlt's own normalize/load step is left out (it takes seconds per run; the ingest tests cover
it), so each example is fast and there can be a useful number of them.
"""

from __future__ import annotations

import json
import logging
import string
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from recovery_pipeline.billing_engine import schema
from recovery_pipeline_tests._fuzz_support import (
    card_numbers_in,
    contains_any,
    duckdb_text_values,
    format_card,
    luhn_card,
)
from recovery_pipeline_tests.ingest_fixtures import World, query, ts

M = "2025-03"
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)
FUTURE = datetime(2031, 1, 1, tzinfo=UTC)
CANONICAL = ("subscriptions", "invoices", "transactions")

# text fields where a broken export could carry a pasted card number: free-text / card-like
# fields, and the short code fields (status, currency, country) too
CARD_FIELDS = {
    "customers": ("email", "country"),
    "subscriptions": ("plan_id", "business_entity", "status", "currency"),
    "invoices": ("business_entity", "status", "currency"),
    "transactions": ("payment_method_token", "decline_message", "card_fingerprint",
                     "gateway_transaction_id", "decline_code", "card_brand", "status", "currency",
                     "card_country"),
}
TEXT_FIELDS = {
    "subscriptions": ("plan_id", "billing_period_unit", "business_entity"),
    "invoices": ("business_entity",),
    "transactions": ("gateway", "gateway_status", "decline_code", "decline_message",
                     "payment_method_type", "card_brand", "card_country"),
    "customers": ("email", "country"),
}
STATES = {"subscriptions": schema.SUBSCRIPTION_STATES, "invoices": schema.INVOICE_STATES,
          "transactions": schema.TRANSACTION_STATES}

# random unicode without digits (so no accidental digit runs) and without surrogates
free_text = st.text(st.characters(exclude_categories=("Cs", "Nd")), max_size=24)
cards = st.builds(
    lambda body, style: (luhn_card(body), style),
    st.text(string.digits, min_size=12, max_size=18).filter(lambda s: s[0] != "0"),
    st.sampled_from(["plain", "spaces", "dashes"]),
)
currencies = st.one_of(
    st.sampled_from([None, "", "XXQ", "usd", "GBP", "EUR", "JPY", "  ", "€"]), free_text)
amounts = st.one_of(
    st.integers(-10**7, 10**7), st.sampled_from([2**70, -(2**70), 2**63, "12.5", "abc", None, "", 0]))
timestamps = st.one_of(
    st.just(ts(M, 7)), st.just(FUTURE), st.sampled_from([None, "", "yesterday-ish", "2025-13-45"]),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2099, 1, 1),
                 timezones=st.just(UTC)))


@st.composite
def mutations(draw, entity: str) -> tuple[dict, list[str]]:
    """A dict of column overrides for one row of ``entity`` + the card numbers it carries."""
    out: dict = {}
    carried: list[str] = []
    if entity != "customers":
        if draw(st.booleans()):
            out["currency"] = draw(currencies)
        if draw(st.booleans()):
            out["amount_minor"] = draw(amounts)
        if draw(st.booleans()):
            out["status"] = draw(st.one_of(st.sampled_from(sorted(STATES[entity]) + [None, "weird"]),
                                           free_text))
    if draw(st.integers(0, 3)) == 0:
        out["created_at"] = draw(timestamps)
    if draw(st.integers(0, 3)) == 0:
        out["updated_at"] = draw(timestamps)
    for col in draw(st.lists(st.sampled_from(TEXT_FIELDS[entity]), max_size=2, unique=True)):
        out[col] = draw(st.one_of(free_text, st.sampled_from(["", None])))
    if draw(st.integers(0, 2)) == 0:
        col = draw(st.sampled_from(CARD_FIELDS[entity]))
        card, style = draw(cards)
        before, after = draw(free_text), draw(free_text)
        tail = draw(st.sampled_from(["", " 123", "-12", " 12/27", " 4000056655665556"]))  # CVC, expiry, 2nd card
        out[col] = f"{before} {format_card(card, style)}{tail} {after}".strip()
        carried.append(card)
    return out, carried


@st.composite
def batches(draw) -> dict:
    """Rows per entity (dicts of the export contract) + card numbers injected + the file format."""
    w = World()
    good = w.good_month(M, 2)
    subs = [r for r in w.rows["subscriptions"]]
    custs = [r for r in w.rows["customers"]]
    cards_in: list[str] = []
    n = draw(st.integers(4, 14))
    for i in range(n):
        entity = draw(st.sampled_from(["customers", "subscriptions", "invoices", "transactions",
                                       "invoices", "transactions"]))
        if entity == "customers":
            row = w.customer(M)
        elif entity == "subscriptions":
            row = w.subscription(M, draw(st.sampled_from(custs)))
        elif entity == "invoices":
            row = w.invoice(M, draw(st.sampled_from(subs)), status=draw(st.sampled_from(["paid", "open"])))
            ref = draw(st.sampled_from(["ok", "ok", "ghost_sub", "ghost_customer", "null_sub"]))
            if ref == "ghost_sub":
                row["subscription_id"] = f"sub_ghost{i}"
            elif ref == "ghost_customer":
                row["customer_id"], row["subscription_id"] = f"cus_ghost{i}", None
            elif ref == "null_sub":
                row["subscription_id"] = None
        else:
            inv = draw(st.sampled_from(good + w.rows["invoices"]))
            row = w.transaction(M, inv, draw(st.sampled_from(["succeeded", "failed", "refunded"])))
            if draw(st.integers(0, 4)) == 0:
                row["invoice_id"] = draw(st.sampled_from([f"in_ghost{i}", None, ""]))
        overrides, carried = draw(mutations(entity))
        row.update(overrides)
        if entity != "customers" and draw(st.integers(0, 9)) == 0:  # no primary key at all
            row[schema.PRIMARY_KEYS[entity]] = draw(st.sampled_from([None, ""]))
        cards_in += carried
        if draw(st.integers(0, 5)) == 0:  # a second version of the same record (dedupe by key)
            pk = schema.PRIMARY_KEYS[entity]
            again = dict(row)
            again.update(draw(mutations(entity))[0])
            again[pk] = row[pk]
            w.rows[entity].append(again)
    fmt = draw(st.sampled_from(["csv", "jsonl", "parquet"]))
    return {"rows": w.rows, "cards": cards_in, "fmt": fmt}


def _cell(v, fmt: str):
    if isinstance(v, datetime):
        return v.isoformat()
    if fmt == "jsonl":
        return v
    return None if v is None else str(v)


def write_batch(exports: Path, rows: dict[str, list[dict]], fmt: str) -> None:
    import csv

    for entity, items in rows.items():
        if not items:
            continue
        cols = [c.name for c in schema.ENTITIES[entity].columns]
        path = exports / entity / f"{M}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            with open(path, "w", newline="", encoding="utf-8") as f:
                wr = csv.writer(f)
                wr.writerow(cols)
                for r in items:
                    wr.writerow(["" if r.get(c) is None else _cell(r.get(c), fmt) for c in cols])
        elif fmt == "jsonl":
            with open(path, "w", encoding="utf-8") as f:
                for r in items:
                    f.write(json.dumps({c: _cell(r.get(c), fmt) for c in cols}) + "\n")
        else:  # parquet with every column as text: the typed fast path does not apply
            table = pa.table({c: pa.array([_cell(r.get(c), fmt) for r in items], pa.string())
                              for c in cols})
            pq.write_table(table, path)


def expected_keys(rows: dict[str, list[dict]], fmt: str) -> dict[str, set[str | None]]:
    """Distinct primary keys per entity; None stands for the rows that have no key."""
    out = {}
    for entity in CANONICAL:
        pk = schema.PRIMARY_KEYS[entity]
        keys = set()
        for r in rows[entity]:
            k = r.get(pk)
            if k == "" and fmt == "csv":  # an empty CSV cell reads as null
                k = None
            keys.add(k)
        out[entity] = keys
    return out


_run = iter(range(10**6))


def load_direct(cfg, month: str) -> None:
    """The export reader + raw contract into billing_raw, then the canonical models for ``month``."""
    from recovery_pipeline.ingest.exports import RAW_ENTITIES, list_export_files, read_export_file
    from recovery_pipeline.sqlmodels.runner import prepare, run_month, warehouse

    loaded_at = datetime(2025, 5, 1, tzinfo=UTC)
    with warehouse(cfg.warehouse) as wh:
        prepare(wh)
        con = wh.con
        for entity in RAW_ENTITIES:
            for f in list_export_files(cfg.exports_dir, entity, {month}):
                con.register("incoming_rows", read_export_file(f, loaded_at))
                con.execute(f"insert into billing_raw.{entity} by name select * from incoming_rows")
                con.unregister("incoming_rows")
    run_month(cfg.warehouse, month, as_of=AS_OF)


@settings(max_examples=6, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(batch=batches())
def test_fuzzed_export_rows_are_each_canonical_or_quarantined_and_no_card_number_is_kept(
        tmp_path, caplog, capfd, batch):
    caplog.set_level(logging.INFO)
    caplog.clear()
    root = tmp_path / f"run{next(_run)}"
    cfg = SimpleNamespace(warehouse=str(root / "warehouse.duckdb"), data_dir=root / "data",
                          exports_dir=root / "exports", billing_db_url=None)
    write_batch(cfg.exports_dir, batch["rows"], batch["fmt"])

    load_direct(cfg, M)

    want = expected_keys(batch["rows"], batch["fmt"])
    for entity in CANONICAL:
        pk = schema.PRIMARY_KEYS[entity]
        canonical = [r[0] for r in query(cfg, f"select {pk} from canonical.{entity} where month = $m",
                                         {"m": M})]
        assert len(canonical) == len(set(canonical)), f"{entity}: a primary key twice in canonical"
        quarantined = query(cfg, "select record_id, reason, detail from canonical.quarantine "
                                 "where entity = $e and month = $m", {"e": entity, "m": M})
        assert all(reason and detail for _, reason, detail in quarantined), quarantined
        q_ids = {r[0] for r in quarantined}
        assert not (set(canonical) & q_ids), f"{entity}: both canonical and quarantined"
        assert set(canonical) | q_ids == want[entity], (
            f"{entity}: lost {want[entity] - set(canonical) - q_ids}, "
            f"unexpected {(set(canonical) | q_ids) - want[entity]}")

    leaks = []
    for table, column, value in duckdb_text_values(cfg.warehouse):
        found = card_numbers_in(value) + contains_any(value, batch["cards"])
        if found:
            leaks.append((table, column, value[:80]))
    assert not leaks, f"card numbers stored: {leaks[:5]}"
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err):
        assert not contains_any(text, batch["cards"])
        assert not card_numbers_in(text)


def test_rows_without_a_primary_key_are_quarantined_not_dropped(tmp_path):
    w = World()
    good = w.good_month(M, 2)
    w.invoice(M, w.rows["subscriptions"][0], invoice_id=None)
    w.transaction(M, good[0], transaction_id=None)
    cfg = SimpleNamespace(warehouse=str(tmp_path / "warehouse.duckdb"), exports_dir=tmp_path / "exports")
    write_batch(cfg.exports_dir, w.rows, "jsonl")
    load_direct(cfg, M)
    q = query(cfg, "select entity, record_id, reason, detail from canonical.quarantine order by entity")
    assert q == [("invoices", None, "invalid_value", "missing invoice_id"),
                 ("transactions", None, "invalid_value", "missing transaction_id")]
    assert query(cfg, "select count(*) from canonical.invoices")[0][0] == 2


@settings(max_examples=300, deadline=None, derandomize=True)
@given(card=cards, before=free_text, after=free_text,
       tail=st.sampled_from(["", " 123", "-12", " 12/27", " 7", "-0000"]))
def test_card_number_pasted_in_any_text_is_masked_by_the_raw_contract(card, before, after, tail):
    from recovery_pipeline.ingest.cardscan import mask_card_numbers

    number, style = card
    value = f"{before} {format_card(number, style)}{tail} {after}"
    masked, found = mask_card_numbers(value)
    assert found
    assert not contains_any(masked, [number]) and not card_numbers_in(masked)
    assert masked.endswith(f" {after}") and masked.startswith(f"{before} ")  # the rest is kept
