"""Export drop folder -> billing_raw with dlt: incremental by file, permissive, card numbers masked."""

from __future__ import annotations

from recovery_pipeline.ingest.exports import list_export_files, pending_files
from recovery_pipeline.ingest.pipeline import load_raw
from recovery_pipeline_tests.ingest_fixtures import CARD, World, query

M = "2025-03"


def _load(settings, months=(M,)):
    return load_raw("exports", list(months), warehouse=settings.warehouse,
                    data_dir=settings.data_dir, exports_dir=settings.exports_dir)


def test_second_run_loads_nothing_new(data_env):
    w = World()
    w.good_month(M, 3)
    w.write_exports(data_env.exports_dir)
    first = _load(data_env)
    second = _load(data_env)
    assert first.rows["invoices"] == 3 and first.rows["transactions"] == 3
    assert second.total_rows == 0
    assert query(data_env, "select count(*) from billing_raw.invoices")[0][0] == 3


def test_a_new_file_for_the_month_is_loaded_alone(data_env):
    w = World()
    w.good_month(M, 2)
    w.write_exports(data_env.exports_dir)
    _load(data_env)
    later = World()
    later._n = 1000
    later.good_month(M, 1)
    later.write_exports(data_env.exports_dir, suffix="-late")
    second = _load(data_env)
    assert second.rows["invoices"] == 1
    assert query(data_env, "select count(*) from billing_raw.invoices")[0][0] == 3


def test_only_the_partition_month_is_loaded(data_env):
    w = World()
    w.good_month("2025-03", 2)
    w.good_month("2025-04", 1)
    w.write_exports(data_env.exports_dir)
    s = _load(data_env, ["2025-04"])
    assert s.rows["invoices"] == 1
    assert query(data_env, "select distinct _month from billing_raw.invoices") == [("2025-04",)]


def test_csv_with_an_unparseable_amount_does_not_break_the_load(data_env):
    w = World()
    w.good_month(M, 2)
    w.write_exports(data_env.exports_dir, fmt="csv")
    path = data_env.exports_dir / "invoices" / f"{M}.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index("amount_minor")] = "12.5x"
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    s = _load(data_env)
    assert s.rows["invoices"] == 2
    rows = query(data_env, "select amount_minor, _invalid_columns from billing_raw.invoices "
                           "order by invoice_id")
    assert rows[0] == (None, "amount_minor") and rows[1][1] is None


def test_jsonl_exports_load_with_contract_types(data_env):
    w = World()
    w.good_month(M, 2)
    w.write_exports(data_env.exports_dir, fmt="jsonl")
    s = _load(data_env)
    assert s.rows["transactions"] == 2
    (amount, created) = query(data_env, "select amount_minor, created_at from billing_raw.invoices "
                                        "limit 1")[0]
    assert amount == 1500 and created.year == 2025


def test_one_format_per_month_when_several_are_dropped(data_env):
    w = World()
    w.good_month(M, 2)
    w.write_exports(data_env.exports_dir, fmt="parquet")
    w.write_exports(data_env.exports_dir, fmt="csv")
    files = list_export_files(data_env.exports_dir, "invoices")
    assert [f.fmt for f in files] == ["parquet"]
    assert _load(data_env).rows["invoices"] == 2


def test_card_numbers_are_masked_before_anything_is_stored(data_env):
    w = World()
    inv = w.good_month(M, 1)[0]
    w.transaction(M, inv, "failed", 2, decline_message=f"card {CARD} was declined")
    w.write_exports(data_env.exports_dir)
    _load(data_env)
    rows = query(data_env, "select decline_message, _card_like_columns from billing_raw.transactions "
                           "where _card_like_columns is not null")
    assert rows == [("card ************4242 was declined", "decline_message")]
    dump = query(data_env, "select string_agg(cast(t as varchar), '|') from billing_raw.transactions t")
    assert CARD not in dump[0][0]


def test_changed_file_is_pending_again(data_env):
    w = World()
    w.good_month(M, 1)
    w.write_exports(data_env.exports_dir)
    files = list_export_files(data_env.exports_dir, "invoices")
    loaded = {f.rel: f.fingerprint for f in files}
    assert pending_files(files, loaded) == []
    w.good_month(M, 1)
    w.write_exports(data_env.exports_dir)
    assert [f.rel for f in pending_files(list_export_files(data_env.exports_dir, "invoices"),
                                         loaded)] == [f"invoices/{M}.parquet"]


def test_loaded_packages_keep_no_copy_of_the_rows(data_env):
    w = World()
    w.good_month(M, 3)
    w.write_exports(data_env.exports_dir)
    summary = _load(data_env)
    assert summary.rows["invoices"] == 3
    packages = data_env.data_dir / "dlt_pipelines" / "billing_exports" / "load" / "loaded"
    loaded = [p for p in packages.iterdir() if p.is_dir()]
    assert [p.name for p in loaded] == summary.load_ids  # the package (state, trace) stays
    job_files = [f for p in loaded for f in p.rglob("*") if f.is_file() and "completed_jobs" in f.parts]
    assert job_files == []  # its job files (copies of the rows now in the warehouse) are gone
