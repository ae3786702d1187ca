"""great-expectations (1.x) suites over the small aggregated parity frames.

Built in code on an ephemeral context with a pandas datasource: the frames are a few hundred
rows produced by the parity SQL, so validating them in pandas is fast and exact (GX's SQL path
is not used against DuckDB). One context and one set of suites per process, built on first use.

Suites:
- ``count_parity``: invoice, transaction and failed-transaction counts differ by no more than the
  tolerance (``excess`` <= 0);
- ``currency_parity``: every currency either side reports is an ISO-4217 code, and every
  high-volume currency has equal counts on both sides (within tolerance);
- ``outcome_parity``: outcomes are from the known vocabulary and equal on both sides;
- ``country_coverage``: every high-volume country is present and equal on both sides.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import pandas as pd

from recovery_pipeline.sqlmodels.reference import ISO_4217
from recovery_pipeline.reconciliation.provider_view import OUTCOMES

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no phoning home from a pipeline

_lock = threading.Lock()
_state: dict = {}


@dataclass
class SuiteOutcome:
    suite: str
    success: bool
    failures: list[dict] = field(default_factory=list)  # one per failed expectation
    failed_rows: pd.DataFrame | None = None  # the frame rows that broke any expectation
    evaluated: int = 0

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: {self.evaluated} expectations passed"
        return f"{self.suite}: " + "; ".join(
            f"{f['expectation']}({f['column']}) failed on {f['unexpected_count']} row(s), e.g. "
            f"{f['examples'][:5]}" for f in self.failures)


def _expectations(gx) -> dict[str, list]:
    # Few expectations per suite on purpose: GX's cost is per expectation (metric graph), not per row.
    E = gx.expectations
    return {
        "count_parity": [
            E.ExpectColumnValuesToBeBetween(column="excess", max_value=0),
        ],
        "currency_parity": [
            E.ExpectColumnValuesToBeInSet(column="currency", value_set=sorted(ISO_4217)),
            E.ExpectColumnValuesToBeBetween(column="high_volume_excess", max_value=0),
        ],
        "outcome_parity": [
            E.ExpectColumnValuesToBeInSet(column="key", value_set=list(OUTCOMES)),
            E.ExpectColumnValuesToBeBetween(column="excess", max_value=0),
        ],
        "country_coverage": [
            E.ExpectColumnValuesToBeBetween(column="high_volume_excess", max_value=0),
        ],
    }


def _context():
    """The process-wide ephemeral GX context, its pandas batch definitions and suites."""
    with _lock:
        if _state:
            return _state
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            progress_bars=ProgressBarsConfig(globally=False),
            analytics_enabled=False,
        )
        ctx = gx.get_context(mode="ephemeral", project_config=config)
        source = ctx.data_sources.add_pandas("reconciliation_frames")
        batches, suites = {}, {}
        for name, expectations in _expectations(gx).items():
            asset = source.add_dataframe_asset(name)
            batches[name] = asset.add_batch_definition_whole_dataframe(f"{name}_frame")
            suite = gx.ExpectationSuite(name=name)
            for e in expectations:
                suite.add_expectation(e)
            suites[name] = ctx.suites.add(suite)
        _state.update(context=ctx, batches=batches, suites=suites)
        return _state


def validate(suite_name: str, frame: pd.DataFrame) -> SuiteOutcome:
    """Run one suite over ``frame`` (index reset); map unexpected rows back to the frame."""
    state = _context()
    frame = frame.reset_index(drop=True)
    if frame.empty:
        return SuiteOutcome(suite_name, True, evaluated=0)
    batch = state["batches"][suite_name].get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(state["suites"][suite_name], result_format={"result_format": "COMPLETE"})
    failures, bad_idx = [], set()
    for r in result.results:
        if r.success:
            continue
        res = r.result or {}
        idx = [i for i in (res.get("unexpected_index_list") or []) if isinstance(i, int)]
        bad_idx.update(idx)
        failures.append({
            "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column"),
            "unexpected_count": int(res.get("unexpected_count") or len(idx)),
            "examples": [_plain(v) for v in (res.get("partial_unexpected_list") or [])[:10]],
        })
    failed_rows = frame.loc[sorted(bad_idx)] if bad_idx else frame.iloc[0:0]
    return SuiteOutcome(suite_name, bool(result.success), failures, failed_rows, len(result.results))


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    return v


# --- frames each suite validates (built from an evaluated parity frame) ------------------------

def count_frame(ev: pd.DataFrame) -> pd.DataFrame:
    rows = ev[ev["family"].isin(["invoices", "transactions", "failed_transactions"])
              & ev["provider_reports"]]
    return rows[["month", "family", "key", "billing_value", "provider_value", "difference", "excess"]]


def currency_frame(ev: pd.DataFrame) -> pd.DataFrame:
    rows = ev[(ev["family"] == "invoices_by_currency") & ev["provider_reports"]].copy()
    # the code as either side uses it (a key only one side has is still a code that side uses)
    rows["currency"] = rows["key"].where((rows["billing_value"] > 0) | (rows["provider_value"] > 0))
    rows["high_volume_excess"] = rows["excess"].where(rows["high_volume"], 0.0)
    return rows[["month", "family", "key", "billing_value", "provider_value", "difference",
                 "currency", "high_volume_excess"]]


def outcome_frame(ev: pd.DataFrame) -> pd.DataFrame:
    rows = ev[(ev["family"] == "invoice_outcomes") & ev["provider_reports"]]
    return rows[["month", "family", "key", "billing_value", "provider_value", "difference", "excess"]]


def country_frame(ev: pd.DataFrame) -> pd.DataFrame:
    rows = ev[(ev["family"] == "invoices_by_country") & ev["provider_reports"]].copy()
    rows["high_volume_excess"] = rows["excess"].where(rows["high_volume"], 0.0)
    return rows[["month", "family", "key", "billing_value", "provider_value", "difference",
                 "high_volume_excess"]]


FRAMES = {
    "count_parity": count_frame,
    "currency_parity": currency_frame,
    "outcome_parity": outcome_frame,
    "country_coverage": country_frame,
}


def run_all(ev: pd.DataFrame) -> dict[str, SuiteOutcome]:
    return {name: validate(name, build(ev)) for name, build in FRAMES.items()}
