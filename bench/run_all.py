"""`make bench`: run every bench/*.py script at a size that fits this machine and write
bench/RESULTS.md with each script's output (ratios against their targets), machine facts and date."""

from __future__ import annotations

import os
import platform
import re
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


TARGET_LINE = re.compile(
    r"^TARGET (?P<name>.+?) measured=(?P<measured>[-\d.e+]+)(?P<unit>[^ ]*) "
    r"target(?P<op><=|>=|<|>)(?P<goal>[-\d.e+]+)\S* (?P<verdict>MET|NOT MET)$")


def parse_targets(output: str) -> list[dict]:
    return [m.groupdict() for m in map(TARGET_LINE.match, output.splitlines()) if m]


def write_chart(targets: list[dict], path: Path) -> None:
    """One bar per target: measured / goal, so 1.0 is the line (below it is good for <=, above for >=)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [t["name"] for t in targets]
    ratios = [float(t["measured"]) / float(t["goal"]) if float(t["goal"]) else 0.0 for t in targets]
    colors = ["tab:green" if t["verdict"] == "MET" else "tab:red" for t in targets]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(targets) + 1.5))
    ax.barh(names, ratios, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("measured / target (green: met, red: not met)")
    ax.set_title("recovery_pipeline benchmarks against their targets")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py"} and not p.name.startswith("_"))
    sections = []
    targets: list[dict] = []
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=HERE.parent)
        took = time.perf_counter() - t0
        out = (proc.stdout + ("\n" + proc.stderr if proc.returncode else "")).strip()
        print(out, flush=True)
        failed += proc.returncode != 0
        targets += parse_targets(proc.stdout)
        sections.append(f"## {script.name} ({took:.1f} s, exit {proc.returncode})\n\n```\n{out}\n```\n")
    table = ["| benchmark | measured | target | verdict |", "|---|---|---|---|"] + [
        f"| {t['name']} | {t['measured']}{t['unit']} | {t['op']} {t['goal']}{t['unit']} | {t['verdict']} |"
        for t in targets]
    if targets:
        write_chart(targets, HERE / "RESULTS.png")
    (HERE / "RESULTS.md").write_text(
        "# Benchmark results\n\nWritten by `make bench` (bench/run_all.py). Each ratio is measured against "
        "its baseline in the same run.\n\n" + machine_facts() + "\n" + "\n".join(table) + "\n\n"
        + ("![targets](RESULTS.png)\n\n" if targets else "") + "\n".join(sections))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
