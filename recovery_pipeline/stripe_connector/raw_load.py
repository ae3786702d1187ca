"""Load the Stripe path into ``billing_raw`` (the call the ``billing_exports`` assets make when
integration.yaml says ``source.kind: stripe``).

``load_stripe_raw(warehouse=..., data_dir=..., ops_store_url=...)`` runs the events source (the
webhook / file-replay path: the ``stripe_objects`` store) and, when ``api=True``, the Stripe API
source (backfill by ``created`` range or incremental with re-scans). Each has its own dlt pipeline
(``stripe_events``, ``stripe_api``) under ``<data_dir>/dlt_pipelines``, dataset ``billing_raw``;
rows are conformed to the same raw contract as exports (``_source`` = ``stripe_events`` or
``stripe_api``). Returns ``recovery_pipeline.ingest.pipeline.LoadSummary``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import dlt

from recovery_pipeline.ingest.pipeline import RAW_DATASET, LoadSummary, destination_for
from recovery_pipeline.stripe_connector.api_source import stripe_api_source
from recovery_pipeline.stripe_connector.events_source import stripe_events_source

ENTITIES = ("customers", "subscriptions", "invoices", "transactions")


def _pipeline(name: str, warehouse: str, data_dir: str | Path) -> dlt.Pipeline:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    pipelines_dir = Path(data_dir) / "dlt_pipelines"
    pipelines_dir.mkdir(parents=True, exist_ok=True)
    return dlt.pipeline(pipeline_name=name, destination=destination_for(warehouse),
                        dataset_name=RAW_DATASET, pipelines_dir=str(pipelines_dir))


def load_stripe_raw(*, warehouse: str, data_dir: str | Path, ops_store_url: str | None = None,
                    api: bool = False, created_gte: int | None = None, created_lt: int | None = None,
                    stripe_base_url: str | None = None) -> LoadSummary:
    """Load Stripe rows into ``billing_raw``: the event store (when ``ops_store_url``) and/or the
    Stripe API (``api=True``; key from ``STRIPE_API_KEY``; ``created_gte``/``created_lt`` = backfill)."""
    started = datetime.now(UTC)
    summary = LoadSummary(kind="stripe", months=[])
    runs = []
    if ops_store_url:
        runs.append(("stripe_events", stripe_events_source(ops_store_url, loaded_at=started)))
    if api:
        kwargs = {"created_gte": created_gte, "created_lt": created_lt, "loaded_at": started}
        if stripe_base_url:
            kwargs["stripe_base_url"] = stripe_base_url
        runs.append(("stripe_api", stripe_api_source(**kwargs)))
    if not runs:
        raise ValueError("nothing to load: give ops_store_url (events) and/or api=True")
    is_pg = warehouse.startswith("postgresql")
    for name, source in runs:
        pipeline = _pipeline(name, warehouse, data_dir)
        info = pipeline.run(source, loader_file_format=None if is_pg else "parquet")
        summary.load_ids.extend(info.loads_ids)
        trace = pipeline.last_trace
        counts = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
        for entity in ENTITIES:
            summary.rows[entity] = summary.rows.get(entity, 0) + int(counts.get(entity, 0))
    summary.seconds = (datetime.now(UTC) - started).total_seconds()
    return summary
