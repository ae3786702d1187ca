"""``recovery-pipeline`` command line.

Each subcommand lives in its own module under ``recovery_pipeline/commands/`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed args,
returning an exit code). Modules are discovered, so a new command is a new file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from recovery_pipeline import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recovery-pipeline",
        description="Billing <-> failed-payment recovery provider pipeline.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = args.func(args)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
