"""Webhook receiver throughput: verified + durably stored + deduplicated vs a bare echo endpoint.

Starts the receiver as deployed (uvicorn, separate process, with its writer process beside it;
``RECEIVER_BENCH_ECHO=1`` so the same app also serves two echo endpoints, which read the body and
answer 200 without verifying or storing), then drives them and the receiver over loopback (plus the same receiver forced to commit each event alone,
``RECEIVER_MAX_BATCH=1``, as the naive baseline) from a second process: ``wrk`` with a Lua script replaying pre-signed
Revtain deliveries (distinct event ids) when wrk is installed, else an asyncio keep-alive load
generator in a subprocess. Prints events/s and p50/p99 for each, and the ratios.
Targets: receiver >= 0.5 x echo events/s, receiver p99 <= 50 ms.

The two echoes:

* ``POST /echo``: the issue's baseline, a bare echo endpoint on the same server: a plain
  Starlette route (the app's middleware and router, ``Request``, ``Response``). The target's ratio
  is taken against it.
* ``POST /echo-asgi``: a stricter reference, the echo served through the receiver's own raw ASGI
  fast path (no router, no Request/Response objects). Its ratio is printed too: it isolates the
  cost of verifying and durably storing from the cost of the framework.

    .venv/bin/python bench/webhooks.py [--duration 6] [--connections 64] [--rounds 3] [--no-naive] [--generator wrk|python]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _report import target  # noqa: E402
from recovery_pipeline.webhooks.signing import sign_revtain  # noqa: E402

SECRET = "whsec_bench_revtain_secret"
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0

WRK_LUA = r"""
local lines = {}
local idx = 0
local path = os.getenv("BENCH_EVENTS")
local nthreads = tonumber(os.getenv("BENCH_THREADS"))
local counter = 1
function setup(thread)
  thread:set("tid", counter - 1)
  counter = counter + 1
end
function init(args)
  local n = 0
  local my = tonumber(tid)
  for line in io.lines(path) do
    if n % nthreads == my then
      local sp = string.find(line, " ", 1, true)
      lines[#lines + 1] = {string.sub(line, 1, sp - 1), string.sub(line, sp + 1)}
    end
    n = n + 1
  end
end
function request()
  idx = idx + 1
  if idx > #lines then idx = 1 end
  local item = lines[idx]
  return wrk.format("POST", wrk.path, {["Content-Type"] = "application/json",
                                       ["X-Revtain-Signature"] = item[1]}, item[2])
end
"""

# A minimal HTTP/1.1 keep-alive load generator (asyncio streams): used when wrk is missing.
PY_LOADGEN = r"""
import asyncio, json, sys, time
host, port, path, duration, conns, events_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
reqs = []
with open(events_file) as f:
    for line in f:
        sig, body = line.rstrip("\n").split(" ", 1)
        b = body.encode()
        reqs.append(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + b"X-Revtain-Signature: " + sig.encode() + b"\r\nContent-Length: " + str(len(b)).encode()
                    + b"\r\n\r\n" + b)
lat, codes = [], {}
async def worker(k, stop_at):
    r, w = await asyncio.open_connection(host, port)
    i = k
    while time.perf_counter() < stop_at:
        req = reqs[i % len(reqs)]; i += conns
        t = time.perf_counter()
        w.write(req)
        head = await r.readuntil(b"\r\n\r\n")
        n = 0
        for h in head.split(b"\r\n"):
            if h[:15].lower() == b"content-length:":
                n = int(h[15:])
        if n:
            await r.readexactly(n)
        lat.append(time.perf_counter() - t)
        code = int(head[9:12]); codes[code] = codes.get(code, 0) + 1
    w.close()
async def main():
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k, t0 + duration) for k in range(conns)))
    el = time.perf_counter() - t0
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0.0
    print(json.dumps({"rps": len(lat) / el, "p50": q(0.50), "p99": q(0.99), "requests": len(lat),
                      "non2xx": sum(v for c, v in codes.items() if not 200 <= c < 300)}))
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("receiver exited: " + (proc.stderr.read() or b"").decode()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("receiver did not start")


def write_events(path: Path, n: int, prefix: str) -> None:
    with path.open("w") as f:
        for i in range(n):
            body = json.dumps({"id": f"{prefix}_{i:08d}", "event": "recovery.success",
                               "revtainTransactionId": f"rt_{i}", "invoiceId": f"in_{i:08d}",
                               "amount": 1999, "currency": "usd"}, separators=(",", ":"))
            f.write(f"{sign_revtain(SECRET, body.encode())} {body}\n")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port: int, path: str, duration: float, conns: int, events: Path, lua: Path) -> dict:
    threads = 2
    env = dict(os.environ, BENCH_EVENTS=str(events), BENCH_THREADS=str(threads))
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(int(duration), 1)}s", "--latency",
                          "-s", str(lua), f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, env=env, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {m.group(1): _ms(m.group(2), m.group(3))
           for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"rps": rps, "p50": lat.get("50", 0.0), "p99": lat.get("99", 0.0),
            "requests": int(total.group(1)) if total else 0, "non2xx": int(non2xx.group(1)) if non2xx else 0}


def run_python(port: int, path: str, duration: float, conns: int, events: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PY_LOADGEN, "127.0.0.1", str(port), path, str(duration),
                          str(conns), str(events)], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def durable_commit_ms(directory: Path, n: int = 40) -> float:
    """p50 of one SQLite WAL synchronous=FULL commit here: the floor of every acknowledgement."""
    con = sqlite3.connect(directory / "fsync_probe.sqlite", isolation_level=None)
    con.execute("pragma journal_mode=wal")
    con.execute("pragma synchronous=full")
    con.execute("create table t (a)")
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        con.execute("begin")
        con.execute("insert into t values (?)", (i,))
        con.execute("commit")
        times.append(time.perf_counter() - t0)
    con.close()
    return sorted(times)[n // 2] * 1000


def combine(runs: list[dict]) -> dict:
    """Sum requests over rounds (rate = mean of rates); latency percentiles: the worst round."""
    return {"rps": sum(r["rps"] for r in runs) / len(runs), "p50": max(r["p50"] for r in runs),
            "p99": max(r["p99"] for r in runs), "requests": sum(r["requests"] for r in runs),
            "non2xx": sum(r["non2xx"] for r in runs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per endpoint (split into rounds)")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved echo/receiver rounds")
    ap.add_argument("--events", type=int, default=150_000, help="distinct pre-signed deliveries")
    ap.add_argument("--no-naive", dest="naive", action="store_false",
                    help="skip the commit-per-event baseline receiver")
    ap.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    args = ap.parse_args()
    gen = args.generator
    if gen == "auto":
        gen = "wrk" if shutil.which("wrk") else "python"

    tmp = Path(tempfile.mkdtemp(prefix="bench_webhooks_"))
    db = tmp / "ops.sqlite"
    port = free_port()

    def start(port: int, db_path: Path, extra: dict) -> subprocess.Popen:
        env = dict(os.environ, RECOVERY_DATA_DIR=str(tmp), RECOVERY_OPS_STORE_URL=f"sqlite:///{db_path}",
                   REVTAIN_WEBHOOK_SECRET=SECRET, PYTHONPATH=str(REPO), **extra)
        return subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory",
                                 "recovery_pipeline.webhooks.app:app_from_env", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning", "--no-access-log",
                                 # explicit (one process serves echo and receiver alike): fail
                                 # loudly rather than silently fall back to h11/asyncio
                                 "--http", "httptools", "--loop", "uvloop"],
                                env=env, cwd=REPO, stderr=subprocess.PIPE)

    proc = start(port, db, {"RECEIVER_BENCH_ECHO": "1"})
    naive_port = free_port()
    naive = start(naive_port, tmp / "naive.sqlite", {"RECEIVER_MAX_BATCH": "1"}) if args.naive else None
    commit_ms = durable_commit_ms(tmp)
    try:
        wait_up(port, proc)
        if naive is not None:
            wait_up(naive_port, naive)
        warm, rec_events = tmp / "warm.txt", tmp / "events.txt"
        write_events(warm, 2000, "warm")
        write_events(rec_events, args.events, "evt")
        lua = tmp / "bench.lua"
        lua.write_text(WRK_LUA)

        def drive(path: str, events: Path, duration: float, on_port: int = port) -> dict:
            if gen == "wrk":
                return run_wrk(on_port, path, duration, args.connections, events, lua)
            return run_python(on_port, path, duration, args.connections, events)

        drive("/echo", warm, 2)  # warm-up: imports, caches, SQLite pages
        drive("/echo-asgi", warm, 2)
        drive("/webhooks/revtain", warm, 2)
        # Interleave short rounds so background load on a shared machine hits all alike; each
        # receiver round gets its own slice of distinct pre-signed events.
        per_round = max(args.events // args.rounds, 1)
        results: dict[str, list[dict]] = {"echo": [], "asgi": [], "recv": [], "naive": []}
        for r in range(args.rounds):
            chunk = tmp / f"round{r}.txt"
            with rec_events.open() as src, chunk.open("w") as dst:
                for i, line in enumerate(src):
                    if r * per_round <= i < (r + 1) * per_round:
                        dst.write(line)
            results["echo"].append(drive("/echo", chunk, args.duration / args.rounds))
            results["asgi"].append(drive("/echo-asgi", chunk, args.duration / args.rounds))
            results["recv"].append(drive("/webhooks/revtain", chunk, args.duration / args.rounds))
        if naive is not None:  # after the measured runs: its fsync storm must not land in theirs
            for r in range(args.rounds):
                results["naive"].append(drive("/webhooks/revtain", tmp / f"round{r}.txt",
                                              args.duration / args.rounds, naive_port))
        echo, asgi, recv = combine(results["echo"]), combine(results["asgi"]), combine(results["recv"])
        naive_res = combine(results["naive"]) if naive is not None else None
        import httpx

        writer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()["writer"]
    finally:
        for p in (proc, naive):
            if p is None:
                continue
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()

    con = sqlite3.connect(db)
    stored = con.execute("select count(*) from webhook_inbox where event_id like 'evt_%'").fetchone()[0]
    con.close()
    ratio = recv["rps"] / echo["rps"] if echo["rps"] else 0.0
    print(f"generator: {gen}, {args.connections} connections, {args.duration:.0f} s per endpoint, "
          f"cpus: {os.cpu_count()}, store: SQLite WAL synchronous=FULL, group commit, "
          f"writer: {writer.get('kind', '?')}")
    print(f"echo, Starlette route (baseline):  {echo['rps']:9.0f} req/s   p50 {echo['p50']:6.2f} ms   "
          f"p99 {echo['p99']:6.2f} ms   non-2xx {echo['non2xx']}")
    print(f"echo, raw ASGI fast path:          {asgi['rps']:9.0f} req/s   p50 {asgi['p50']:6.2f} ms   "
          f"p99 {asgi['p99']:6.2f} ms   non-2xx {asgi['non2xx']}")
    print(f"revtain (verify+store+dedupe):     {recv['rps']:9.0f} ev/s    p50 {recv['p50']:6.2f} ms   "
          f"p99 {recv['p99']:6.2f} ms   non-2xx {recv['non2xx']}")
    if naive_res is not None:
        print(f"same, a commit per event (no group):{naive_res['rps']:8.0f} ev/s    p50 {naive_res['p50']:6.2f} ms   "
              f"p99 {naive_res['p99']:6.2f} ms   non-2xx {naive_res['non2xx']}")
    print(f"distinct events durably stored:    {stored} (of {recv['requests']} acknowledged deliveries; "
          f"ids wrap after {args.events})")
    print(f"one durable SQLite commit alone: p50 {commit_ms:.2f} ms (commit-per-event ceiling "
          f"~{1000 / commit_ms:.0f}/s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
    if writer["batches"]:
        print(f"group commit: {writer['batches']} commits, {writer['items'] / writer['batches']:.1f} requests "
              f"per commit, {1000 * writer['commit_seconds'] / writer['batches']:.2f} ms per commit (fsync incl.)")
    if naive_res is not None and naive_res["rps"]:
        print(f"group commit vs commit-per-event: {recv['rps'] / naive_res['rps']:.2f}x")
    ok_ratio, ok_p99 = ratio >= TARGET_RATIO, recv["p99"] <= TARGET_P99_MS
    if asgi["rps"]:
        print(f"receiver / raw ASGI echo: {recv['rps'] / asgi['rps']:.3f} (the stricter reference: "
              f"the same dispatch as the receiver, no framework)")
    print(f"ratio receiver/echo (Starlette route): {ratio:.3f} (target >= {TARGET_RATIO}: {'MET' if ok_ratio else 'NOT MET'}); "
          f"receiver p99 {recv['p99']:.1f} ms (target <= {TARGET_P99_MS:.0f} ms: {'MET' if ok_p99 else 'NOT MET'})")
    target("webhooks: receiver rate / echo rate", ratio, ">=", TARGET_RATIO)
    target("webhooks: receiver p99 latency", recv["p99"], "<=", TARGET_P99_MS, " ms")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
