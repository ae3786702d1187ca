"""Asset checks on the canonical tables (whole table; cheap aggregate queries)."""


import dagster as dg

from recovery_pipeline.ingest.cardscan import CANDIDATE_PATTERN, mask_card_numbers
from recovery_pipeline.resources import WarehouseResource
from recovery_pipeline.sqlmodels.runner import prepare
from recovery_pipeline.sqlmodels.runner import warehouse as open_warehouse

KNOWN_REASONS = ("missing_currency", "unknown_currency", "negative_amount", "unknown_state",
                 "orphan_invoice", "orphan_transaction", "future_timestamp", "card_number_like",
                 "invalid_value")
CARD_SCAN = {
    "canonical.transactions": ["gateway_transaction_id", "decline_message", "payment_method_token",
                               "card_bin", "card_fingerprint", "decline_code"],
    "canonical.quarantine": ["row_json", "detail"],
}


def _table_exists(wh, table: str) -> bool:
    schema, name = table.split(".")
    return bool(wh.columns(schema, name))


def _duplicates(warehouse: WarehouseResource, table: str, key: str) -> dg.AssetCheckResult:
    with open_warehouse(warehouse.target) as wh:
        if not _table_exists(wh, table):
            return dg.AssetCheckResult(passed=True, metadata={"note": "table not built yet"})
        rows, dupes = wh.fetchall(
            f"select count(*), count(*) - count(distinct {key}) from {table}")[0]
    return dg.AssetCheckResult(passed=int(dupes) == 0,
                               metadata={"rows": int(rows), "duplicate_ids": int(dupes)})


@dg.asset_check(asset=dg.AssetKey(["canonical", "invoices"]), blocking=False)
def invoices_have_unique_ids(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Every invoice appears once (latest updated_at wins), whatever was re-exported."""
    return _duplicates(warehouse, "canonical.invoices", "invoice_id")


@dg.asset_check(asset=dg.AssetKey(["canonical", "transactions"]), blocking=False)
def transactions_have_unique_ids(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Every payment attempt appears once."""
    return _duplicates(warehouse, "canonical.transactions", "transaction_id")


@dg.asset_check(asset=dg.AssetKey(["canonical", "invoices"]), blocking=False)
def invoices_have_iso_currency_and_non_negative_amounts(
        warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Money is integer minor units >= 0 with an ISO-4217 code, on every canonical invoice."""
    with open_warehouse(warehouse.target) as wh:
        prepare(wh)
        if not _table_exists(wh, "canonical.invoices"):
            return dg.AssetCheckResult(passed=True, metadata={"note": "table not built yet"})
        bad = wh.fetchall(
            "select count(*) from canonical.invoices as i "
            "left join reference.currencies as c on c.code = i.currency "
            "where c.code is null or i.amount_minor < 0 or i.amount_minor is null")[0][0]
    return dg.AssetCheckResult(passed=int(bad) == 0, metadata={"bad_rows": int(bad)})


@dg.asset_check(asset=dg.AssetKey(["canonical", "quarantine"]), blocking=False)
def quarantine_reasons_are_known(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Every quarantined row carries one of the documented reasons."""
    with open_warehouse(warehouse.target) as wh:
        if not _table_exists(wh, "canonical.quarantine"):
            return dg.AssetCheckResult(passed=True, metadata={"note": "table not built yet"})
        rows = wh.fetchall("select reason, count(*) from canonical.quarantine group by reason")
    unknown = {r: int(n) for r, n in rows if r not in KNOWN_REASONS}
    return dg.AssetCheckResult(passed=not unknown, metadata={
        "by_reason": dg.MetadataValue.json({r: int(n) for r, n in rows}),
        "unknown_reasons": dg.MetadataValue.json(unknown)})


@dg.asset_check(asset=dg.AssetKey(["canonical", "quarantine"]), blocking=False,
                additional_deps=[dg.AssetKey(["canonical", "transactions"])])
def no_card_numbers_stored(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """No Luhn-valid 13-19 digit run in card-like/free-text columns or quarantined row_json."""
    found: dict[str, int] = {}
    with open_warehouse(warehouse.target) as wh:
        for table, columns in CARD_SCAN.items():
            if not _table_exists(wh, table):
                continue
            for col in columns:
                if wh.dialect == "postgres":
                    sql = f"select {col} from {table} where {col} ~ %(p)s"
                    rows = wh.conn.exec_driver_sql(sql, {"p": CANDIDATE_PATTERN}).fetchall()
                else:
                    rows = wh.fetchall(f"select {col} from {table} "
                                       f"where regexp_matches({col}, $p)", {"p": CANDIDATE_PATTERN})
                hits = sum(1 for (v,) in rows if mask_card_numbers(v)[1])
                if hits:
                    found[f"{table}.{col}"] = hits
    return dg.AssetCheckResult(passed=not found,
                               metadata={"columns_with_card_numbers": dg.MetadataValue.json(found)})


@dg.asset_check(asset=dg.AssetKey(["canonical", "invoice_outcomes"]), blocking=False)
def every_invoice_has_an_outcome(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """invoice_outcomes covers every canonical invoice, with a known outcome."""
    with open_warehouse(warehouse.target) as wh:
        if not _table_exists(wh, "canonical.invoice_outcomes"):
            return dg.AssetCheckResult(passed=True, metadata={"note": "table not built yet"})
        missing = wh.fetchall(
            "select count(*) from canonical.invoices as i where not exists "
            "(select 1 from canonical.invoice_outcomes as o where o.invoice_id = i.invoice_id)")[0][0]
    return dg.AssetCheckResult(passed=int(missing) == 0,
                               metadata={"invoices_without_outcome": int(missing)})


canonical_checks = [
    invoices_have_unique_ids, transactions_have_unique_ids,
    invoices_have_iso_currency_and_non_negative_amounts, quarantine_reasons_are_known,
    no_card_numbers_stored, every_invoice_has_an_outcome,
]
