"""Dagster definitions of the Stripe source: the event store asset and the inbox sensor."""

from __future__ import annotations

import json

import dagster as dg

from recovery_pipeline.defs.stripe_source import defs as stripe_defs
from recovery_pipeline.defs.stripe_source.assets import stripe_event_store
from recovery_pipeline.defs.stripe_source.checks import stripe_events_are_all_mappable
from recovery_pipeline.defs.stripe_source.sensors import stripe_inbox_sensor
from recovery_pipeline.opsstore.models import webhook_inbox
from recovery_pipeline.resources import OpsStoreResource
from recovery_pipeline.webhooks.inbox import inbox_row
from recovery_pipeline_tests import stripe_testkit as k


def _store_pending(ops: OpsStoreResource, events):
    with ops.engine().begin() as c:
        for ev in events:
            c.execute(webhook_inbox.insert().values(**inbox_row("stripe", ev["id"], ev["type"], "{}",
                                                                json.dumps(ev).encode())))


def test_event_store_asset_applies_pending_stripe_events(tmp_path):
    ops = OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}")
    _store_pending(ops, k.failed_then_paid_events() + [k.event("plan.created", {"id": "p", "object": "plan"}, k.T0)])
    result = dg.materialize([stripe_event_store], resources={"ops_store": ops})
    assert result.success
    md = result.get_asset_materialization_events()[0].materialization.metadata
    assert md["events_applied_this_run"].value == 3 and md["events_skipped_this_run"].value == 1
    assert md["objects_by_type"].value["invoice"] == 1 and md["objects_by_type"].value["invoice_attempt"] == 2
    assert "in_1" in md["preview"].value


def test_mappable_check_fails_on_a_malformed_stored_event(tmp_path):
    ops = OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}")
    bad = {"id": "evt_bad", "object": "event", "type": "invoice.paid", "created": k.T0, "data": {}}
    _store_pending(ops, [bad])
    result = dg.materialize([stripe_event_store, stripe_events_are_all_mappable], resources={"ops_store": ops})
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["malformed_events"].value == 1


def test_inbox_sensor_requests_one_run_per_new_batch(tmp_path):
    ops = OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}")
    ctx = dg.build_sensor_context(resources={"ops_store": ops})
    assert stripe_inbox_sensor(ctx).run_requests == []
    _store_pending(ops, k.failed_then_paid_events())
    first = stripe_inbox_sensor(dg.build_sensor_context(resources={"ops_store": ops}))
    assert [r.run_key for r in first.run_requests] == ["stripe-inbox-3"]
    again = stripe_inbox_sensor(dg.build_sensor_context(cursor=first.cursor, resources={"ops_store": ops}))
    assert again.run_requests == []


def test_stripe_source_definitions_load(tmp_path):
    merged = dg.Definitions.merge(stripe_defs, dg.Definitions(
        resources={"ops_store": OpsStoreResource(url=f"sqlite:///{tmp_path / 'ops.sqlite'}")}))
    assert merged.resolve_job_def("stripe_event_store_job") is not None
    assert merged.resolve_sensor_def("stripe_inbox_sensor").default_status == dg.DefaultSensorStatus.RUNNING
