"""How decisions are executed: mode (shadow / live / cohort), limits and red-flag rules.

The rollout section of ``integration.yaml`` (see ``recovery_pipeline.integration`` when present) is
read through ``policy_from_config``: it accepts a plain dict, any pydantic model or object with the
same field names, or ``None`` (defaults). ``RECOVERY_EXECUTION_MODE`` in the environment overrides
the mode (``shadow`` | ``live`` | ``cohort``).

Outside the cohort an instruction behaves exactly as in shadow mode: recorded, not executed.
The cohort percentage uses a stable hash (sha256) of the customer id, so the same customer is
always in or out for a given percentage and salt, across processes and restarts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["shadow", "live", "cohort"]

# Decline codes where a retry must never happen (card reported lost/stolen, fraud, ...).
DEFAULT_HARD_DECLINE_CODES = frozenset({
    "fraudulent", "lost_card", "stolen_card", "pickup_card", "restricted_card",
    "security_violation", "authentication_required", "revocation_of_all_authorizations",
    "revocation_of_authorization", "stop_payment_order", "invalid_account", "do_not_try_again",
    "merchant_blacklist", "transaction_not_allowed",
})


class CohortRule(BaseModel):
    """Who is live. Empty lists mean "any"; every non-empty criterion must match."""

    model_config = ConfigDict(extra="forbid")

    countries: list[str] = Field(default_factory=list)
    plans: list[str] = Field(default_factory=list)
    currencies: list[str] = Field(default_factory=list)
    business_entities: list[str] = Field(default_factory=list)
    percentage: float | None = Field(default=None, ge=0, le=100)
    salt: str = "recovery-cohort"

    @field_validator("countries", "currencies")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [x.strip().upper() for x in v]


class ExecutionPolicy(BaseModel):
    model_config = ConfigDict(extra="ignore")

    mode: Mode = "shadow"
    cohort: CohortRule = Field(default_factory=CohortRule)
    max_receive_count: int = Field(default=5, ge=1)
    # Idempotency collisions (409 from the billing system) tolerated before manual review.
    max_idempotency_collisions: int = Field(default=2, ge=1)
    hard_decline_codes: frozenset[str] = DEFAULT_HARD_DECLINE_CODES
    batch_size: int = Field(default=500, ge=1)
    # A failed event waits base * 2**(attempts-1) seconds (capped) before its next attempt, so a
    # short billing outage does not burn through max_receive_count in a few sensor ticks.
    retry_backoff_seconds: float = Field(default=30.0, ge=0)
    retry_backoff_max_seconds: float = Field(default=3600.0, ge=0)
    # Standard-Webhooks events: event type -> kind (see instructions.DEFAULT_STANDARD_TYPE_MAP).
    standard_type_map: dict[str, str | None] = Field(default_factory=dict)


def retry_delay_seconds(policy: ExecutionPolicy, attempts: int) -> float:
    if attempts <= 0:
        return 0.0
    return min(policy.retry_backoff_seconds * 2 ** (attempts - 1), policy.retry_backoff_max_seconds)


def in_cohort(rule: CohortRule, ctx: Mapping[str, Any]) -> bool:
    """Is this invoice's customer in the live cohort? Unknown attributes never match a criterion."""

    def _match(allowed: list[str], value: Any, upper: bool = False) -> bool:
        if not allowed:
            return True
        if value in (None, ""):
            return False
        v = str(value).strip()
        return (v.upper() if upper else v) in allowed

    if not _match(rule.countries, ctx.get("customer_country"), upper=True):
        return False
    if not _match(rule.plans, ctx.get("plan_id")):
        return False
    if not _match(rule.currencies, ctx.get("currency"), upper=True):
        return False
    if not _match(rule.business_entities, ctx.get("business_entity")):
        return False
    if rule.percentage is not None and rule.percentage < 100:
        customer = ctx.get("customer_id")
        if not customer:
            return False
        return stable_bucket(str(customer), rule.salt) < rule.percentage
    return True


def stable_bucket(key: str, salt: str = "recovery-cohort") -> float:
    """A number in [0, 100) derived from sha256(salt:key): stable everywhere, uniform enough."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def decide_mode(policy: ExecutionPolicy, ctx: Mapping[str, Any]) -> Literal["shadow", "live"]:
    if policy.mode == "live":
        return "live"
    if policy.mode == "cohort":
        return "live" if in_cohort(policy.cohort, ctx) else "shadow"
    return "shadow"


def _as_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "model_dump"):
        return config.model_dump()
    return {k: getattr(config, k) for k in dir(config) if not k.startswith("_")
            and not callable(getattr(config, k))}


def policy_from_config(config: Any = None, env: Mapping[str, str] | None = None) -> ExecutionPolicy:
    """Build the policy from the rollout config (dict / model / None) and the environment.

    Accepted keys: ``mode``, ``cohort`` (``countries, plans, currencies, business_entities,
    percentage, salt``), ``max_receive_count``, ``max_idempotency_collisions``,
    ``hard_decline_codes``, ``batch_size``, ``standard_type_map``. A flat layout with the cohort
    keys at top level is accepted too. ``RECOVERY_EXECUTION_MODE`` overrides ``mode``.
    """
    env = os.environ if env is None else env
    raw = _as_dict(config)
    cohort = _as_dict(raw.pop("cohort", None))
    for key in list(CohortRule.model_fields):
        if key in raw:
            cohort.setdefault(key, raw.pop(key))
    cohort = {k: v for k, v in cohort.items() if k in CohortRule.model_fields and v is not None}
    known = {k: v for k, v in raw.items() if k in ExecutionPolicy.model_fields and v is not None}
    if "hard_decline_codes" in known:
        known["hard_decline_codes"] = frozenset(known["hard_decline_codes"])
    override = (env.get("RECOVERY_EXECUTION_MODE") or "").strip().lower()
    if override:
        if override not in ("shadow", "live", "cohort"):
            raise ValueError(f"RECOVERY_EXECUTION_MODE must be shadow, live or cohort, not {override!r}")
        known["mode"] = override
    return ExecutionPolicy(**known, cohort=CohortRule(**cohort))


def policy_from_integration(integration: Any, env: Mapping[str, str] | None = None) -> ExecutionPolicy:
    """From ``recovery_pipeline.integration.IntegrationConfig``: its ``rollout`` section plus the
    provider's ``max_receive_count``."""
    rollout = _as_dict(getattr(integration, "rollout", None))
    provider = getattr(integration, "provider", None)
    mrc = getattr(provider, "max_receive_count", None)
    if mrc is not None:
        rollout.setdefault("max_receive_count", mrc)
    return policy_from_config(rollout, env)


def load_policy(integration_file: str | None = None, env: Mapping[str, str] | None = None) -> ExecutionPolicy:
    """The policy from integration.yaml (validated by ``recovery_pipeline.integration``) and env."""
    from recovery_pipeline.integration import load_integration

    return policy_from_integration(load_integration(integration_file), env)
