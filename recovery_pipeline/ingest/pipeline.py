"""Run the raw load: which dlt source (exports | sql_database), which destination, where state lives.

Pure (no Dagster): the ``billing_exports`` assets, the backfill and the benchmark all call
``load_raw``. Destination: the warehouse (DuckDB file by default, PostgreSQL by URL), dataset
``billing_raw``. dlt's pipeline working dirs live under ``<data_dir>/dlt_pipelines`` (not ~/.dlt).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dlt

from recovery_pipeline.ingest.exports import RAW_ENTITIES, billing_exports_source
from recovery_pipeline.ingest.sql_database import billing_database_source

RAW_DATASET = "billing_raw"
PIPELINE_NAMES = {"exports": "billing_exports", "sql_database": "billing_database"}


@dataclass
class LoadSummary:
    kind: str
    months: list[str]
    rows: dict[str, int] = field(default_factory=dict)  # entity -> rows loaded this run
    load_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def destination_for(warehouse: str):
    if warehouse.startswith("postgresql"):
        from dlt.destinations.impl.postgres.configuration import PostgresCredentials

        creds = PostgresCredentials(warehouse)
        if creds.password is None:  # trust / peer auth: dlt insists on a password field
            creds.password = ""
        creds.resolve()
        return dlt.destinations.postgres(credentials=creds)
    from dlt.destinations.impl.duckdb.configuration import DuckDbCredentials

    # raw rows have no meaningful order (the canonical layer dedupes by key): let DuckDB insert the
    # loader files in parallel
    creds = DuckDbCredentials(str(warehouse), global_config={"preserve_insertion_order": False})
    return dlt.destinations.duckdb(credentials=creds)


def make_pipeline(kind: str, warehouse: str, data_dir: str | Path) -> dlt.Pipeline:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    if kind not in PIPELINE_NAMES:
        raise ValueError(f"source kind {kind!r} has no raw pipeline here "
                         f"(expected one of {sorted(PIPELINE_NAMES)}; 'stripe' is issue 6's connector)")
    pipelines_dir = Path(data_dir) / "dlt_pipelines"
    pipelines_dir.mkdir(parents=True, exist_ok=True)
    config = PIPELINE_NAMES[kind].upper()  # dlt's config section for this pipeline
    # the Parquet files dlt writes from the Arrow tables are transient (the loader reads them once,
    # on the same disk): uncompressed writes ~40% faster than the default snappy (dlt config,
    # scoped to this pipeline; an operator's own setting wins)
    os.environ.setdefault(f"{config}__DATA_WRITER__COMPRESSION", "none")
    # a loaded package's job files are copies of rows now in the warehouse (about 300 MB per 1M
    # invoices backfilled): drop them once loaded, keep the package's state and trace
    os.environ.setdefault(f"{config}__LOAD__DELETE_COMPLETED_JOBS", "true")
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAMES[kind],
        destination=destination_for(warehouse),
        dataset_name=RAW_DATASET,
        pipelines_dir=str(pipelines_dir),
        progress="log" if os.environ.get("RECOVERY_DLT_PROGRESS") else None,
    )


def load_raw(kind: str, months: list[str], *, warehouse: str, data_dir: str | Path,
             exports_dir: str | Path | None = None, billing_db_url: str | None = None,
             primary_keys: dict[str, str] | None = None,
             formats: tuple[str, ...] | list[str] = ("parquet", "jsonl", "csv"),
             entities: tuple[str, ...] = RAW_ENTITIES) -> LoadSummary:
    """Load ``months`` of raw billing rows from the configured source; returns what was loaded."""
    started = datetime.now(UTC)
    pipeline = make_pipeline(kind, warehouse, data_dir)
    if kind == "exports":
        if exports_dir is None:
            raise ValueError("exports_dir is required for the exports source")
        source = billing_exports_source(exports_dir=str(exports_dir), months=months,
                                        entities=entities, formats=formats, loaded_at=started)
    else:
        if not billing_db_url:
            raise ValueError("billing_db_url is required for the sql_database source")
        source = billing_database_source(url=billing_db_url, months=months, entities=entities,
                                         primary_keys=primary_keys, loaded_at=started)
    is_pg = warehouse.startswith("postgresql")
    info = pipeline.run(source, loader_file_format=None if is_pg else "parquet")
    summary = LoadSummary(kind=kind, months=list(months), load_ids=list(info.loads_ids))
    trace = pipeline.last_trace
    counts = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
    for entity in entities:
        summary.rows[entity] = int(counts.get(entity, 0))
    summary.seconds = (datetime.now(UTC) - started).total_seconds()
    return summary
