"""The provider_sync assets materialize against the sandbox and report what they sent."""

from __future__ import annotations

import warnings

import dagster as dg
import httpx

from recovery_pipeline.defs.provider_sync import assets as ps_assets
from recovery_pipeline.providers.synthetic import generate
from recovery_pipeline.resources import OpsStoreResource, ProviderResource, WarehouseResource
from recovery_pipeline_tests.provider_fixtures import API_KEY, make_canonical_duckdb, sandbox  # noqa: F401

warnings.filterwarnings("ignore", category=dg.BetaWarning)


def _resources(tmp_path, url, wh):
    return {
        "provider": ProviderResource(integration_file="", base_url=url, api_key=API_KEY,
                                     provider="slicker", batch_size=50, requests_per_second=500,
                                     max_receive_count=3),
        "warehouse": WarehouseResource(target=wh),
        "ops_store": OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}"),
    }


def test_pushed_assets_send_everything_and_report_metadata(tmp_path, sandbox):
    data = generate(90, seed=8)
    wh = make_canonical_duckdb(tmp_path / "wh.duckdb", data)
    res = _resources(tmp_path, sandbox, wh)
    selected = [ps_assets.pushed_subscriptions, ps_assets.pushed_invoices, ps_assets.pushed_transactions]
    result = dg.materialize(selected, resources=res)
    assert result.success
    meta = {m.asset_key.path[-1]: m.metadata for m in [
        e.event_specific_data.materialization for e in result.get_asset_materialization_events()]}
    assert meta["pushed_invoices"]["records_sent"].value == 90
    assert meta["pushed_transactions"]["records_sent"].value == len(data["transactions"])
    assert meta["pushed_invoices"]["429s"].value == 0 and meta["pushed_invoices"]["preview"].value
    held = httpx.get(f"{sandbox}/sandbox/counts").json()["totals"]
    assert held["invoices"] == 90 and held["subscriptions"] == len(data["subscriptions"])


def test_provider_options_come_from_integration_yaml_unless_overridden(tmp_path):
    path = tmp_path / "integration.yaml"
    path.write_text("provider:\n  name: revtain\n  batch_size: 40\n  requests_per_second: 2\n"
                    "  max_receive_count: 7\n")
    opts = ProviderResource(integration_file=str(path), base_url="http://x", api_key="k").options()
    assert (opts.provider, opts.batch_size, opts.requests_per_second, opts.max_receive_count) == (
        "revtain", 40, 2, 7)
    over = ProviderResource(integration_file=str(path), base_url="http://x", api_key="k",
                            batch_size=10).options()
    assert over.batch_size == 10 and over.provider == "revtain"


def test_dead_letter_check_fails_while_a_push_waits_for_redrive(tmp_path, sandbox):
    from recovery_pipeline.defs.provider_sync import checks
    from recovery_pipeline.providers.push import PushSettings, push_entity
    from recovery_pipeline.providers.synthetic import chunks
    from recovery_pipeline_tests.provider_fixtures import faults, make_client

    res = _resources(tmp_path, sandbox, str(tmp_path / "unused.duckdb"))
    engine = res["ops_store"].engine()
    ctx = dg.build_asset_check_context(resources={"ops_store": res["ops_store"],
                                                  "provider": res["provider"]})
    assert checks.no_push_is_waiting_in_dead_letters(ctx).passed
    faults(sandbox, fraction_5xx=1.0, seed=1)
    with make_client(sandbox) as client:
        push_entity(engine, client, "invoices", chunks(generate(5)["invoices"]),
                    PushSettings(max_receive_count=1))
    result = checks.no_push_is_waiting_in_dead_letters(ctx)
    assert not result.passed and result.metadata["dead_letters"].value == 1
