"""integration.yaml: the merchant's integration-shape decisions, validated at load.

These are the "Phase 1: Confirm the integration shape" decisions of a provider's custom billing
integration guide (canonical ids, sync model, payment source of truth, recovery execution, dunning
owner, historical window, rollout cohort) plus which provider and which billing source this
deployment talks to. The pipeline reads them: the backfill window, which source the raw load uses,
which decision path (webhook / polling / hybrid) runs, the provider's limits.

Errors name the field: ``IntegrationConfigError("historical_window_months: ...")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recovery_pipeline.billing_engine.schema import ENTITIES, PRIMARY_KEYS

SOURCE_KIND_ENV = "RECOVERY_SOURCE_KIND"  # overrides source.kind (exports | sql_database | stripe)
DEFAULT_WINDOW_MONTHS = 12
MAX_WINDOW_MONTHS = 24


class IntegrationConfigError(ValueError):
    """integration.yaml is missing or invalid; the message names the offending field(s)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CohortRule(_Strict):
    """Which traffic is live during a cohort rollout. Empty lists mean "no restriction"."""

    countries: list[str] = Field(default_factory=list)  # ISO-3166 alpha-2
    plans: list[str] = Field(default_factory=list)
    currencies: list[str] = Field(default_factory=list)  # ISO-4217
    business_entities: list[str] = Field(default_factory=list)
    percentage: float = Field(default=100.0, ge=0, le=100)  # of invoices, by a stable hash of the id

    @field_validator("countries")
    @classmethod
    def _countries(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not (isinstance(c, str) and len(c) == 2 and c.isalpha())]
        if bad:
            raise ValueError(f"not ISO-3166 alpha-2 country codes: {bad}")
        return [c.upper() for c in v]

    @field_validator("currencies")
    @classmethod
    def _currencies(cls, v: list[str]) -> list[str]:
        from recovery_pipeline.sqlmodels.reference import ISO_4217

        bad = [c for c in v if str(c).upper() not in ISO_4217]
        if bad:
            raise ValueError(f"not ISO-4217 currency codes: {bad}")
        return [c.upper() for c in v]


class Rollout(_Strict):
    mode: Literal["shadow", "live", "cohort"] = "shadow"
    cohort: CohortRule = Field(default_factory=CohortRule)


class ProviderConfig(_Strict):
    name: Literal["slicker", "revtain", "butter"] = "slicker"
    batch_size: int = Field(default=100, ge=1, le=1000)
    requests_per_second: float = Field(default=5, gt=0, le=1000)
    max_receive_count: int = Field(default=5, ge=1, le=100)


class SourceConfig(_Strict):
    kind: Literal["exports", "sql_database", "stripe"] = "exports"
    # file formats accepted in the export drop folder
    formats: list[Literal["parquet", "csv", "jsonl"]] = Field(
        default_factory=lambda: ["parquet", "csv", "jsonl"])


class IntegrationConfig(_Strict):
    canonical_ids: dict[str, str] = Field(default_factory=lambda: dict(PRIMARY_KEYS))
    sync_model: Literal["near_real_time", "batch", "both"] = "both"
    payment_source_of_truth: Literal["billing_system", "payment_processor"] = "billing_system"
    recovery_execution: Literal["webhook", "polling", "hybrid"] = "webhook"
    dunning_owner: Literal["billing_system", "provider"] = "provider"
    historical_window_months: int = Field(default=DEFAULT_WINDOW_MONTHS, ge=1, le=MAX_WINDOW_MONTHS)
    rollout: Rollout = Field(default_factory=Rollout)
    provider: ProviderConfig = Field(default_factory=ProviderConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)

    @field_validator("canonical_ids")
    @classmethod
    def _ids(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(ENTITIES))
        if unknown:
            raise ValueError(f"unknown entities {unknown}; expected some of {sorted(ENTITIES)}")
        for entity, column in v.items():
            columns = [c.name for c in ENTITIES[entity].columns]
            if column not in columns:
                raise ValueError(f"{entity}: {column!r} is not a column of the {entity} export "
                                 f"(columns: {', '.join(columns)})")
        return {**PRIMARY_KEYS, **v}

    @model_validator(mode="after")
    def _cohort_needs_rule(self) -> IntegrationConfig:
        c = self.rollout.cohort
        if self.rollout.mode == "cohort" and not (
            c.countries or c.plans or c.currencies or c.business_entities or c.percentage < 100
        ):
            raise ValueError("rollout.cohort: mode 'cohort' needs a rule (countries, plans, "
                             "currencies, business_entities or percentage < 100)")
        return self

    def source_kind(self, env: dict[str, str] | None = None) -> str:
        """The configured source kind, overridable by ``RECOVERY_SOURCE_KIND``."""
        env = os.environ if env is None else env
        kind = env.get(SOURCE_KIND_ENV) or self.source.kind
        if kind not in ("exports", "sql_database", "stripe"):
            raise IntegrationConfigError(
                f"{SOURCE_KIND_ENV}: {kind!r} is not one of exports, sql_database, stripe")
        return kind

    @property
    def uses_webhooks(self) -> bool:
        return self.recovery_execution in ("webhook", "hybrid")

    @property
    def uses_polling(self) -> bool:
        return self.recovery_execution in ("polling", "hybrid")


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        lines.append(f"{loc}: {msg}")
    return f"{origin} is invalid:\n  " + "\n  ".join(lines)


def parse_integration(data: dict | None, origin: str = "integration.yaml") -> IntegrationConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise IntegrationConfigError(f"{origin}: expected a mapping at the top level")
    try:
        return IntegrationConfig.model_validate(data)
    except ValidationError as exc:
        raise IntegrationConfigError(_format_errors(exc, origin)) from None


def load_integration(path: str | Path | None = None) -> IntegrationConfig:
    """Read and validate integration.yaml (default: ``settings.integration_file``).

    A missing file gives the documented defaults (exports source, 12-month window, shadow mode).
    """
    if path is None:
        from recovery_pipeline.settings import load_settings

        path = load_settings().integration_file
    path = Path(path)
    if not path.exists():
        return IntegrationConfig()
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise IntegrationConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_integration(data, origin=str(path))
