"""The code location: every domain's definitions, merged, with resources chosen in one place."""

from __future__ import annotations

import dagster as dg

from recovery_pipeline.resources import build_resources

# Each domain package exposes ``defs: dg.Definitions`` (assets, checks, sensors, schedules, jobs).
DOMAINS: list[str] = ["billing_exports", "canonical", "provider_feedback", "recovery_execution", "provider_sync", "stripe_source", "reconciliation", "monitoring"]


def build_definitions() -> dg.Definitions:
    import importlib

    domain_defs = [importlib.import_module(f"recovery_pipeline.defs.{d}").defs for d in DOMAINS]
    return dg.Definitions.merge(*domain_defs, dg.Definitions(resources=build_resources()))


defs = build_definitions()
