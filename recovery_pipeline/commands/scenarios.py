"""``recovery-pipeline scenarios``: the launch-readiness table (seed "Test Before Launch").

Runs every scenario end to end against the configured environment (provider sandbox, webhook
receiver, demo billing engine and its database, ops store: see ``execution/scenarios.py``) and
prints pass/fail per row. Exit code 0 only when every scenario passes.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("scenarios", help="run the launch-test scenarios and print a readiness table")
    p.add_argument("--only", action="append", default=None,
                   help="run scenarios whose name contains this text (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from recovery_pipeline.execution.scenarios import ScenarioEnv, results_json, run_scenarios

    results = run_scenarios(ScenarioEnv.from_settings(), only=args.only)
    if args.json:
        print(results_json(results))
    else:
        table = Table(title="Launch readiness")
        for col in ("scenario", "verifies", "result", "detail"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(r.scenario, r.verifies, "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
                          r.detail)
        Console().print(table)
        passed = sum(r.passed for r in results)
        print(f"{passed}/{len(results)} scenarios passed")
    return 0 if results and all(r.passed for r in results) else 1
