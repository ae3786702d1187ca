"""The code location loads: groups, assets, monthly partitions, sensor, job, checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from recovery_pipeline.settings import REPO_ROOT

RAW = [["billing_raw", e] for e in ("customers", "subscriptions", "invoices", "transactions")]
CANONICAL = [["canonical", n] for n in ("subscriptions", "invoices", "transactions",
                                        "invoice_outcomes", "quarantine")]


def _repo():
    from recovery_pipeline.definitions import defs

    return defs, defs.get_repository_def()


def test_groups_and_assets_exist_with_monthly_partitions():
    _, repo = _repo()
    graph = repo.asset_graph
    for path, group in [*[(k, "billing_exports") for k in RAW], *[(k, "canonical") for k in CANONICAL]]:
        node = graph.get(dg.AssetKey(path))
        assert node.group_name == group, path
        assert isinstance(node.partitions_def, dg.MonthlyPartitionsDefinition), path


def test_canonical_deps_come_from_the_sql():
    _, repo = _repo()
    parents = repo.asset_graph.get(dg.AssetKey(["canonical", "invoices"])).parent_keys
    assert dg.AssetKey(["billing_raw", "invoices"]) in parents
    assert dg.AssetKey(["canonical", "quarantine"]) in parents


def test_sensor_job_and_checks_are_registered():
    defs, repo = _repo()
    sensor = repo.get_sensor_def("billing_changes_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_job_def("billing_sync_job") is not None
    check_names = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {"invoices_have_unique_ids", "no_card_numbers_stored"} <= check_names


def test_definitions_validate_loadable():
    from recovery_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs)


def test_dg_check_defs_passes():
    dg_bin = Path(sys.executable).parent / "dg"
    exe = str(dg_bin) if dg_bin.exists() else shutil.which("dg")
    assert exe, "the dg CLI (dagster-dg-cli) is installed with the project"
    proc = subprocess.run([exe, "check", "defs"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=280, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_every_sensor_and_schedule_starts_running():
    from recovery_pipeline.definitions import defs as all_defs

    repo = all_defs.get_repository_def()
    stopped = [s.name for s in repo.sensor_defs if s.default_status != dg.DefaultSensorStatus.RUNNING]
    stopped += [s.name for s in repo.schedule_defs
                if s.default_status != dg.DefaultScheduleStatus.RUNNING]
    assert {s.name for s in repo.sensor_defs} >= {"billing_changes_sensor", "failed_transactions_sensor",
                                                  "execution_sensor", "alerting_sensor"}
    assert {s.name for s in repo.schedule_defs} >= {"daily_reconciliation_schedule", "recovery_actions_poll"}
    assert stopped == []
