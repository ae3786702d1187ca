"""Provider options resolved from configuration (integration.yaml ``provider`` + overrides), and the
client built from them. Pure: Dagster's ProviderResource only delegates here."""

from __future__ import annotations

import math
from dataclasses import dataclass

from recovery_pipeline.providers.base import get_adapter
from recovery_pipeline.providers.http import ProviderClient, RetryPolicy
from recovery_pipeline.providers.push import PushSettings


@dataclass(frozen=True)
class ProviderOptions:
    provider: str
    base_url: str
    api_key: str
    batch_size: int = 100
    requests_per_second: float = 5.0
    max_receive_count: int = 5
    concurrency: int = 0  # batches in flight; 0 = auto_concurrency(requests_per_second)
    timeout_seconds: float = 10.0
    rate_safety: float = 0.98  # the client keeps just under the provider's limit
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    def client(self) -> ProviderClient:
        policy = RetryPolicy(max_attempts=self.max_receive_count,
                             backoff_initial=self.backoff_initial, backoff_max=self.backoff_max,
                             jitter=self.backoff_initial)
        return ProviderClient(get_adapter(self.provider), self.base_url, self.api_key,
                              self.requests_per_second * self.rate_safety,
                              timeout=self.timeout_seconds, policy=policy)

    def push_settings(self) -> PushSettings:
        return PushSettings(batch_size=self.batch_size, max_receive_count=self.max_receive_count,
                            concurrency=self.concurrency or auto_concurrency(self.requests_per_second))


def auto_concurrency(requests_per_second: float, round_trip_seconds: float = 0.3) -> int:
    """Batches in flight that keep the limiter busy: the rate x a round trip of up to 300 ms (a
    loaded sandbox or provider answers in 150-350 ms at 50 req/s); at least 2, at most
    16). The token bucket, not this number, keeps the rate: more in flight never sends faster."""
    return min(16, max(2, math.ceil(requests_per_second * round_trip_seconds)))


def resolve_options(*, base_url: str, api_key: str | None, integration_file: str | None = None,
                    provider: str = "", batch_size: int = 0, requests_per_second: float = 0.0,
                    max_receive_count: int = 0, **extra) -> ProviderOptions:
    """Explicit values win; zero/empty ones come from integration.yaml's ``provider`` section."""
    from recovery_pipeline.settings import SECRET_ENV_VARS, secret

    cfg = None
    if not (provider and batch_size and requests_per_second and max_receive_count):
        from recovery_pipeline.integration import load_integration

        cfg = load_integration(integration_file).provider
    return ProviderOptions(
        provider=provider or cfg.name,
        base_url=base_url,
        api_key=api_key or secret(SECRET_ENV_VARS["provider_api_key"]) or "",
        batch_size=batch_size or cfg.batch_size,
        requests_per_second=requests_per_second or cfg.requests_per_second,
        max_receive_count=max_receive_count or cfg.max_receive_count,
        **extra,
    )


def options_from_environment(provider: str = "", base_url: str | None = None):
    """What the ``push`` and ``redrive`` commands share: the settings, the provider options (flags
    over integration.yaml over defaults) and an initialised ops-store engine."""
    from recovery_pipeline.opsstore import create_ops_engine, init_ops_store
    from recovery_pipeline.settings import load_settings

    settings = load_settings()
    settings.ensure_dirs()
    opts = resolve_options(base_url=base_url or settings.provider_base_url, api_key=None,
                           integration_file=str(settings.integration_file), provider=provider)
    engine = create_ops_engine(settings.ops_store_url)
    init_ops_store(engine)
    return settings, opts, engine
