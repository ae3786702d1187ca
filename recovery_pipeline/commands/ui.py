"""``recovery-pipeline ui``: the Dagster UI over the embedded data."""

from __future__ import annotations

import os
import subprocess
import sys

from recovery_pipeline.settings import REPO_ROOT, load_settings


def register(sub) -> None:
    p = sub.add_parser("ui", help="serve the Dagster UI (dagster dev) on the embedded data")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=run)


def run(args) -> int:
    from recovery_pipeline.commands.backfill import ensure_instance_config

    settings = load_settings()
    settings.ensure_dirs()
    ensure_instance_config(settings.dagster_home)  # same instance config as the demo and backfill
    env = dict(os.environ, DAGSTER_HOME=str(settings.dagster_home))
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(REPO_ROOT / "workspace.yaml"),
           "-p", str(args.port)]
    return subprocess.call(cmd, env=env, cwd=REPO_ROOT)
