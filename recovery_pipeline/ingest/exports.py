"""dlt source over the billing export drop folder: ``<exports_dir>/<entity>/<YYYY-MM>*.<fmt>``.

* loads only files not loaded yet: each resource keeps ``{relative path: [size, mtime_ns]}`` in its
  dlt state (committed with the load, so a failed load is retried next time);
* reads with DuckDB (Parquet, CSV as text, JSONL) and yields Arrow tables, never row dicts;
* conforms to the raw contract (``contract.conform``): a bad value never breaks a load;
* appends: export files are immutable, the canonical layer dedupes by primary key (latest
  ``updated_at`` wins). A file whose size/mtime changed is loaded again (and deduped downstream).

When one month of one entity exists in several formats (the generator can write Parquet and CSV
of the same rows), only the preferred format is loaded (parquet > jsonl > csv).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dlt

from recovery_pipeline.ingest.contract import conform, conform_fast, new_duckdb

FORMAT_PREFERENCE = ("parquet", "jsonl", "csv")
RAW_ENTITIES = ("customers", "subscriptions", "invoices", "transactions")
_MONTH_FILE = re.compile(r"^(\d{4}-\d{2})(.*)\.(parquet|csv|jsonl)$")


@dataclass(frozen=True)
class ExportFile:
    entity: str
    month: str
    path: Path
    fmt: str
    size: int
    mtime_ns: int

    @property
    def rel(self) -> str:
        return f"{self.entity}/{self.path.name}"

    @property
    def fingerprint(self) -> list[int]:
        return [self.size, self.mtime_ns]


def list_export_files(exports_dir: str | Path, entity: str, months: set[str] | None = None,
                      formats: tuple[str, ...] | list[str] = FORMAT_PREFERENCE) -> list[ExportFile]:
    """The export files of one entity (optionally only some months), one format per file stem."""
    folder = Path(exports_dir) / entity
    if not folder.is_dir():
        return []
    by_stem: dict[str, ExportFile] = {}
    for p in sorted(folder.iterdir()):
        m = _MONTH_FILE.match(p.name)
        if not m or not p.is_file() or m.group(3) not in formats:
            continue
        month = m.group(1)
        if months is not None and month not in months:
            continue
        st = p.stat()
        f = ExportFile(entity, month, p, m.group(3), st.st_size, st.st_mtime_ns)
        stem = month + m.group(2)
        current = by_stem.get(stem)
        if current is None or FORMAT_PREFERENCE.index(f.fmt) < FORMAT_PREFERENCE.index(current.fmt):
            by_stem[stem] = f
    return sorted(by_stem.values(), key=lambda f: (f.month, f.path.name))


def pending_files(files: list[ExportFile], loaded: dict[str, list[int]]) -> list[ExportFile]:
    return [f for f in files if loaded.get(f.rel) != f.fingerprint]


def read_export_file(f: ExportFile, loaded_at: datetime):
    """One export file as a conformed Arrow table (DuckDB reads it; no Python rows)."""
    if f.fmt == "parquet":
        import pyarrow.parquet as pq

        # ParquetFile.read: no dataset discovery (pq.read_table goes through pyarrow.dataset)
        table = pq.ParquetFile(f.path).read()
        fast = conform_fast(f.entity, table, source=f.rel, month=f.month, loaded_at=loaded_at)
        if fast is not None:
            return fast
    con = new_duckdb()
    try:
        path = str(f.path)
        if f.fmt == "parquet":
            rel = con.read_parquet(path)
        elif f.fmt == "csv":
            rel = con.read_csv(path, header=True, all_varchar=True)
        else:
            rel = con.read_json(path, format="newline_delimited")
        rel.create_view("incoming")
        return conform(con, f.entity, "incoming", source=f.rel, month=f.month,
                       loaded_at=loaded_at)
    finally:
        con.close()


def _export_resource(exports_dir: str, entity: str, months: set[str] | None,
                     formats: tuple[str, ...], loaded_at: datetime):
    @dlt.resource(name=entity, table_name=entity, write_disposition="append")
    def load_files() -> Iterator:
        state = dlt.current.resource_state()
        loaded: dict[str, list[int]] = state.setdefault("loaded_files", {})
        files = pending_files(list_export_files(exports_dir, entity, months, formats), loaded)
        # read + conform the next file in a worker thread while dlt writes the current table
        # (Arrow/DuckDB release the GIL: two cores busy); at most one file read ahead
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"read_{entity}") as pool:
            ahead = pool.submit(read_export_file, files[0], loaded_at) if files else None
            for i, f in enumerate(files):
                table = ahead.result()
                ahead = (pool.submit(read_export_file, files[i + 1], loaded_at)
                         if i + 1 < len(files) else None)
                if table.num_rows:
                    yield table
                loaded[f.rel] = f.fingerprint

    return load_files


@dlt.source(name="billing_exports", max_table_nesting=0)
def billing_exports_source(exports_dir: str = dlt.config.value, months: list[str] | None = None,
                           entities: list[str] | tuple[str, ...] = RAW_ENTITIES,
                           formats: list[str] | tuple[str, ...] = FORMAT_PREFERENCE,
                           loaded_at: datetime | None = None):
    """One append resource per entity over the drop folder; ``months`` limits to those months."""
    loaded_at = loaded_at or datetime.now(UTC)
    month_set = set(months) if months is not None else None
    return [_export_resource(str(exports_dir), e, month_set, tuple(formats), loaded_at)
            for e in entities]


def changed_months(exports_dir: str | Path, seen: dict[str, list[int]],
                   entities: tuple[str, ...] = RAW_ENTITIES,
                   formats: tuple[str, ...] = FORMAT_PREFERENCE) -> dict[str, list[ExportFile]]:
    """Months with files not in ``seen`` ({rel: [size, mtime_ns]}): month -> new/changed files.

    A cheap directory listing (stat only); used by the incremental sensor.
    """
    out: dict[str, list[ExportFile]] = {}
    for e in entities:
        for f in list_export_files(exports_dir, e, None, formats):
            if seen.get(f.rel) != f.fingerprint:
                out.setdefault(f.month, []).append(f)
    return out
