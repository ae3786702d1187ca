"""The billing export: one folder per entity, one file per month, the columns of ``schema.py``.

``exports/<entity>/<YYYY-MM>.<parquet|csv|jsonl>``. A month's file holds the rows whose
``created_at`` falls in that month (injected bad rows excepted: they sit in the month they were
injected into, a future-dated row included). Files are written in chunks (Parquet row groups,
appended CSV / JSONL), so memory stays bounded whatever the volume.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from recovery_pipeline.billing_engine import schema

FORMATS = ("parquet", "csv", "jsonl")
TS_TYPE = pa.timestamp("us", tz="UTC")


def _arrow_type(col: sa.Column) -> pa.DataType:
    t = col.type
    if isinstance(t, sa.DateTime):
        return TS_TYPE
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.BigInteger):
        return pa.int64()
    if isinstance(t, sa.Integer):
        return pa.int32()
    return pa.string()


def arrow_schema(entity: str) -> pa.Schema:
    """Arrow schema of an entity's export (same column order as the SQL table)."""
    table = schema.ENTITIES[entity]
    return pa.schema([pa.field(c.name, _arrow_type(c), nullable=True) for c in table.columns])


def dictionary_columns(entity: str) -> list[str]:
    """Low-cardinality columns worth dictionary-encoding in Parquet (ids and timestamps are not)."""
    high = {"email", "payment_method_token", "card_fingerprint"}
    return [f.name for f in arrow_schema(entity)
            if not (f.name.endswith("_id") or f.name in high or pa.types.is_timestamp(f.type))]


def read_options_for_csv(entity: str) -> pacsv.ConvertOptions:
    """How to read an export CSV back with the right types (empty unquoted cell = null)."""
    sch = arrow_schema(entity)
    return pacsv.ConvertOptions(column_types={f.name: f.type for f in sch},
                                strings_can_be_null=True, quoted_strings_can_be_null=False)


def read_export(path: Path) -> pa.Table:
    """Read one export file (any format) into Arrow with the contract's types."""
    path = Path(path)
    entity = path.parent.name
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".csv":
        return pacsv.read_csv(path, convert_options=read_options_for_csv(entity))
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        sch = arrow_schema(entity)
        cols = {}
        for f in sch:
            vals = [r.get(f.name) for r in rows]
            cols[f.name] = pa.array(vals, pa.string()).cast(f.type) if pa.types.is_timestamp(f.type) \
                else pa.array(vals, f.type)
        return pa.table(cols, schema=sch)
    raise ValueError(f"not an export file: {path}")


class ExportWriter:
    """Appends Arrow batches to ``<root>/<entity>/<month>.<fmt>`` for each requested format."""

    def __init__(self, root: Path, formats: tuple[str, ...] | list[str] = ("parquet",)):
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise ValueError(f"unknown export format(s) {bad}; choose from {list(FORMATS)}")
        self.root = Path(root)
        self.formats = tuple(formats)
        self._open: dict[tuple[str, str, str], object] = {}
        self.files: list[Path] = []

    def _path(self, entity: str, month: str, fmt: str) -> Path:
        return self.root / entity / f"{month}.{fmt}"

    def write(self, entity: str, month: str, batch: pa.Table) -> None:
        sch = arrow_schema(entity)
        batch = batch.select(sch.names).cast(sch)
        for fmt in self.formats:
            key = (entity, month, fmt)
            writer = self._open.get(key)
            if writer is None:
                path = self._path(entity, month, fmt)
                path.parent.mkdir(parents=True, exist_ok=True)
                if fmt == "parquet":
                    writer = pq.ParquetWriter(path, sch, compression="zstd",
                                              use_dictionary=dictionary_columns(entity))
                elif fmt == "csv":
                    writer = pacsv.CSVWriter(path, sch, write_options=pacsv.WriteOptions(
                        quoting_style="needed"))
                else:
                    writer = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close_month
                self._open[key] = writer
                self.files.append(path)
            if fmt == "jsonl":
                for row in batch.to_pylist():
                    writer.write(json.dumps(
                        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()})
                        + "\n")
            else:
                writer.write_table(batch)

    def close_month(self, entity: str, month: str) -> None:
        for fmt in self.formats:
            writer = self._open.pop((entity, month, fmt), None)
            if writer is not None:
                writer.close()

    def close(self) -> None:
        for writer in self._open.values():
            writer.close()
        self._open.clear()
