"""``recovery-pipeline execute``: poll the provider (when the integration polls) and execute the
decisions that are due, once, outside Dagster (demo, on-call). Same code as the Dagster assets
``polled_recovery_actions`` and ``executed_actions``; honours the kill switch and the rollout mode.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("execute", help="poll recovery actions and execute due provider decisions once")
    p.add_argument("--mode", choices=["shadow", "live", "cohort"], default=None,
                   help="override the rollout mode for this run")
    p.add_argument("--no-poll", action="store_true", help="skip polling the provider")
    p.set_defaults(func=run)


def run(args) -> int:
    from recovery_pipeline.resources import build_resources

    res = build_resources()
    settings, ops = res["execution_settings"], res["ops_store"]
    billing_engine, billing_db = res["billing_engine"], res["billing_db"]
    from recovery_pipeline.execution.executor import execute_pending
    from recovery_pipeline.execution.polling import PollError, poll_recovery_actions

    engine = ops.engine()
    out: dict = {}
    if not args.no_poll and settings.polling_enabled():
        fetch = settings.page_fetcher()
        try:
            out["poll"] = poll_recovery_actions(engine, fetch, name=settings.poll_name).as_metadata()
        except PollError as exc:
            out["poll"] = {"error": str(exc)}
        finally:
            fetch.close()
    policy = settings.policy()
    if args.mode:
        policy = policy.model_copy(update={"mode": args.mode})
    with billing_engine.billing_system(context_engine=billing_db.engine()) as billing:
        report = execute_pending(engine, billing, policy)
    out["execution"] = {"mode": policy.mode, **report.as_metadata()}
    print(json.dumps(out, indent=2, default=str))
    return 0
