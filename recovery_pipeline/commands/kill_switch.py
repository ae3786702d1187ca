"""``recovery-pipeline kill-switch on|off|status``: pause or resume execution of recovery decisions.

The flag lives in the ops store (``control_flags.kill_switch``): the execution sensor reads it on
every tick and the executor before every action, so it takes effect within one sensor tick.
Ingestion (receiver, polling, sync) continues; paused events stay pending and run when it is off.
``RECOVERY_KILL_SWITCH=1`` in the environment forces it on regardless of the flag.
"""

from __future__ import annotations

import getpass

from recovery_pipeline.settings import load_settings


def register(sub) -> None:
    p = sub.add_parser("kill-switch", help="pause / resume execution of provider decisions")
    p.add_argument("state", choices=["on", "off", "status"])
    p.add_argument("--by", default=None, help="who flips it (recorded; default: the OS user)")
    p.set_defaults(func=run)


def run(args) -> int:
    from recovery_pipeline.execution.killswitch import kill_switch_state, set_kill_switch
    from recovery_pipeline.opsstore import create_ops_engine, init_ops_store

    settings = load_settings()
    settings.ensure_dirs()
    engine = create_ops_engine(settings.ops_store_url)
    init_ops_store(engine)
    if args.state in ("on", "off"):
        by = args.by or _user()
        set_kill_switch(engine, args.state == "on", by=by)
    state = kill_switch_state(engine)
    print(state.describe())
    return 0


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name available (containers)
        return "cli"
