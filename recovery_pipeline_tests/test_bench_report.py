"""bench/run_all.py collects every script's TARGET lines into RESULTS.md and a chart."""

from __future__ import annotations

import contextlib
import io
import sys

from recovery_pipeline.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
import _report  # noqa: E402
import run_all  # noqa: E402


def test_target_lines_round_trip_with_verdicts(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        met = _report.target("push: fraction of allowed rate", 0.93, ">=", 0.9)
        missed = _report.target("webhooks: receiver p99", 72.5, "<=", 50, " ms")
    assert (met, missed) == (True, False)
    parsed = run_all.parse_targets("noise\n" + out.getvalue())
    assert [(t["name"], t["verdict"], t["unit"]) for t in parsed] == [
        ("push: fraction of allowed rate", "MET", ""), ("webhooks: receiver p99", "NOT MET", "ms")]
    run_all.write_chart(parsed, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
