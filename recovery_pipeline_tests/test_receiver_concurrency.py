"""Concurrency and durability of the receiver: concurrent duplicates, several processes, SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time

import httpx

from ._webhook_support import (delivery, inbox_rows, post_many, start_receiver_process,
                               start_receiver_processes, stop_process)


def _deliver_all(base_urls: list[str], jobs: list[tuple[str, str]], concurrency: int = 32) -> list[int]:
    """POST every (provider, event_id) job, each freshly signed, spread over ``base_urls``."""
    by_url: dict[str, list[tuple[int, tuple[str, bytes, dict]]]] = {u: [] for u in base_urls}
    for i, (provider, event_id) in enumerate(jobs):
        body, headers = delivery(provider, event_id)
        by_url[base_urls[i % len(base_urls)]].append((i, (f"/webhooks/{provider}", body, headers)))

    async def run() -> list[int]:
        per_url = await asyncio.gather(*(post_many(u, [r for _, r in reqs], concurrency // len(base_urls))
                                         for u, reqs in by_url.items()))
        codes = [0] * len(jobs)
        for (u, reqs), got in zip(by_url.items(), per_url, strict=True):
            for (i, _), code in zip(reqs, got, strict=True):
                codes[i] = code
        return codes

    return asyncio.run(run())


def test_thousand_events_each_delivered_three_times_concurrently_are_stored_once(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    jobs = [("revtain", f"evt_{i:04d}") for i in range(1000)] * 3
    random.Random(7).shuffle(jobs)
    proc, url = start_receiver_process(db_url, tmp_path)  # its own process: no GIL shared with the client
    try:
        t0 = time.perf_counter()
        codes = _deliver_all([url], jobs)
        print(f"3000 deliveries in {time.perf_counter() - t0:.1f} s")
    finally:
        stop_process(proc)
    assert codes.count(200) == 3000
    rows = inbox_rows(db_url)
    assert len(rows) == 1000
    assert {r["event_id"] for r in rows} == {f"evt_{i:04d}" for i in range(1000)}


def test_two_receiver_processes_on_one_sqlite_store_store_each_event_once(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    (a, url_a), (b, url_b) = start_receiver_processes(db_url, tmp_path, 2)
    try:
        providers = ["revtain", "stripe", "slicker", "butter", "standard"]
        jobs = [(providers[i % 5], f"evt_{i:04d}") for i in range(200)] * 2
        random.Random(11).shuffle(jobs)
        t0 = time.perf_counter()
        codes = _deliver_all([url_a, url_b], jobs, concurrency=32)
        print(f"{len(jobs)} deliveries over two processes in {time.perf_counter() - t0:.1f} s")
    finally:
        stop_process(a)
        stop_process(b)
    assert codes.count(200) == 400
    rows = inbox_rows(db_url)
    assert len(rows) == 200
    assert len({(r["provider"], r["event_id"]) for r in rows}) == 200


def test_receiver_killed_mid_burst_keeps_every_acknowledged_event(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'ops.sqlite'}"
    proc, url = start_receiver_process(db_url, tmp_path)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(10_000):
                if stop.is_set():
                    return
                event_id = f"evt_{worker}_{i}"
                body, headers = delivery("stripe", event_id)
                try:
                    r = client.post(f"{url}/webhooks/stripe", content=body, headers=headers)
                except httpx.HTTPError:
                    return  # the receiver is gone
                if 200 <= r.status_code < 300:
                    with lock:
                        acked.append(event_id)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(8)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: requests are in flight
        proc.wait(10)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        stop_process(proc)
    assert len(acked) >= 200
    stored = {r["event_id"] for r in inbox_rows(db_url)}
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events lost"
