"""`make bench`: run every bench/*.py script at a size that fits this machine and write
bench/RESULTS.md with each script's output (ratios against their targets), machine facts and date."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine_facts() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return (f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n- python: {platform.python_version()}\n"
            f"- cpus: {os.cpu_count()}\n- memory: {mem}\n- platform: {platform.platform()}\n")


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py"} and not p.name.startswith("_"))
    sections = []
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=HERE.parent)
        took = time.perf_counter() - t0
        out = (proc.stdout + ("\n" + proc.stderr if proc.returncode else "")).strip()
        print(out, flush=True)
        failed += proc.returncode != 0
        sections.append(f"## {script.name} ({took:.1f} s, exit {proc.returncode})\n\n```\n{out}\n```\n")
    (HERE / "RESULTS.md").write_text(
        "# Benchmark results\n\nWritten by `make bench` (bench/run_all.py).\n\n" + machine_facts() + "\n"
        + "\n".join(sections))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
