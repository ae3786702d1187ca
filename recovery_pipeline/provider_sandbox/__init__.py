"""The provider sandbox: a real HTTP service that speaks the public wire contracts of the recovery
providers in PROVIDERS.md (Slicker ingest + recovery actions, Revtain execute, Butter payments),
stores what it receives, recommends deterministically, delivers signed webhooks with each
provider's retry schedule, answers counts for reconciliation and injects faults on request."""

from recovery_pipeline.provider_sandbox.app import SandboxConfig, create_app

__all__ = ["SandboxConfig", "create_app"]
