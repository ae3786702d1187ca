"""integration.yaml: the shipped example loads; every field is validated with an error naming it."""

from __future__ import annotations

import pytest
import yaml

from recovery_pipeline.integration import (
    IntegrationConfigError,
    load_integration,
    parse_integration,
)
from recovery_pipeline.settings import REPO_ROOT


def test_shipped_example_loads_with_every_decision():
    cfg = load_integration(REPO_ROOT / "integration.yaml")
    assert cfg.canonical_ids["invoices"] == "invoice_id"
    assert cfg.sync_model in ("near_real_time", "batch", "both")
    assert 6 <= cfg.historical_window_months <= 12
    assert cfg.provider.batch_size == 100 and cfg.provider.requests_per_second == 5
    assert cfg.source.kind == "exports"


def test_missing_file_gives_documented_defaults(tmp_path):
    cfg = load_integration(tmp_path / "absent.yaml")
    assert cfg.historical_window_months == 12
    assert cfg.rollout.mode == "shadow"
    assert cfg.provider.max_receive_count == 5


@pytest.mark.parametrize("data, field", [
    ({"sync_model": "hourly"}, "sync_model"),
    ({"payment_source_of_truth": "crm"}, "payment_source_of_truth"),
    ({"recovery_execution": "email"}, "recovery_execution"),
    ({"dunning_owner": "nobody"}, "dunning_owner"),
    ({"historical_window_months": 0}, "historical_window_months"),
    ({"historical_window_months": 25}, "historical_window_months"),
    ({"rollout": {"mode": "half"}}, "rollout.mode"),
    ({"rollout": {"mode": "cohort"}}, "rollout.cohort"),
    ({"rollout": {"mode": "cohort", "cohort": {"countries": ["GBR"]}}}, "rollout.cohort.countries"),
    ({"rollout": {"mode": "cohort", "cohort": {"currencies": ["XXQ"]}}}, "rollout.cohort.currencies"),
    ({"rollout": {"mode": "cohort", "cohort": {"percentage": 150}}}, "rollout.cohort.percentage"),
    ({"provider": {"name": "acme"}}, "provider.name"),
    ({"provider": {"batch_size": 0}}, "provider.batch_size"),
    ({"provider": {"requests_per_second": -1}}, "provider.requests_per_second"),
    ({"provider": {"max_receive_count": 0}}, "provider.max_receive_count"),
    ({"source": {"kind": "ftp"}}, "source.kind"),
    ({"canonical_ids": {"invoices": "number"}}, "canonical_ids"),
    ({"canonical_ids": {"refunds": "refund_id"}}, "canonical_ids"),
    ({"histroical_window_months": 6}, "histroical_window_months"),
])
def test_invalid_field_is_named_in_the_error(data, field):
    with pytest.raises(IntegrationConfigError) as err:
        parse_integration(data)
    assert f"{field}:" in str(err.value)


def test_invalid_yaml_file_names_the_file(tmp_path):
    p = tmp_path / "integration.yaml"
    p.write_text(yaml.safe_dump({"historical_window_months": 30}))
    with pytest.raises(IntegrationConfigError) as err:
        load_integration(p)
    assert str(p) in str(err.value) and "historical_window_months" in str(err.value)


def test_source_kind_env_overrides_the_file():
    cfg = parse_integration({"source": {"kind": "exports"}})
    assert cfg.source_kind({"RECOVERY_SOURCE_KIND": "sql_database"}) == "sql_database"
    with pytest.raises(IntegrationConfigError, match="RECOVERY_SOURCE_KIND"):
        cfg.source_kind({"RECOVERY_SOURCE_KIND": "carrier_pigeon"})


def test_decision_path_follows_recovery_execution():
    assert parse_integration({"recovery_execution": "hybrid"}).uses_polling
    assert not parse_integration({"recovery_execution": "webhook"}).uses_polling
    assert not parse_integration({"recovery_execution": "polling"}).uses_webhooks
