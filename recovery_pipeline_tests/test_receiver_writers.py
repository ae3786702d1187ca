"""The receiver's group-commit writers: the writer process (default) and the writer thread.

Both must answer the same way; the process writer must never acknowledge what it did not store
when its child dies, must be replaced, must not outlive a killed receiver, and must not carry
secrets on its command line. A commit slower than ``commit_timeout_s`` answers 503.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from recovery_pipeline.webhooks.store_process import encode_frame, take_frames

from ._webhook_support import (SECRETS, delivery, inbox_rows, receiver, rejection_rows, start_receiver_process,
                               stop_process)


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ops.sqlite'}"


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_both_writers_store_once_answer_duplicates_and_record_rejections(tmp_path, writer):
    db = _db(tmp_path)
    body, headers = delivery("revtain", "evt_1")
    with receiver(db, writer=writer) as c:
        first = c.post("/webhooks/revtain", content=body, headers=headers)
        again = c.post("/webhooks/revtain", content=body, headers=headers)
        forged = c.post("/webhooks/revtain", content=body, headers={**headers, "X-Revtain-Signature": "0" * 64})
        broken_body = b"{not json"
        _, broken_headers = delivery("revtain", "evt_2", body=broken_body)
        broken = c.post("/webhooks/revtain", content=broken_body, headers=broken_headers)
        health = c.get("/healthz").json()
    assert first.status_code == 200 and first.json()["duplicate"] is False
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert forged.status_code == 401 and broken.status_code == 400
    assert health["writer"]["kind"] == writer and health["writer"]["rows"] == 1
    assert [r["event_id"] for r in inbox_rows(db)] == ["evt_1"]
    assert sorted(r["status_code"] for r in rejection_rows(db)) == [400, 401]


def test_killed_writer_process_is_replaced_and_nothing_unstored_is_acknowledged(tmp_path):
    db = _db(tmp_path)
    with receiver(db) as c:
        old = c.get("/healthz").json()["writer"]["pid"]
        os.kill(old, signal.SIGKILL)
        body, headers = delivery("stripe", "evt_after_kill")
        codes = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code = c.post("/webhooks/stripe", content=body, headers=headers).status_code
            codes.append(code)
            if code == 200:
                break
            time.sleep(0.05)
        new = c.get("/healthz").json()["writer"]["pid"]
    assert codes[-1] == 200 and set(codes[:-1]) <= {503}
    assert new != old and _gone(old)
    assert [r["event_id"] for r in inbox_rows(db)] == ["evt_after_kill"]


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_commit_slower_than_the_timeout_answers_503_and_the_retry_is_stored_once(tmp_path, writer):
    db = _db(tmp_path)
    body, headers = delivery("revtain", "evt_slow")
    with receiver(db, writer=writer, commit_timeout_s=1.0) as c:
        # hold the writers' inter-process lock: the commit waits behind it
        fd = os.open(tmp_path / "ops.sqlite.inbox-lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            t0 = time.monotonic()
            slow = c.post("/webhooks/revtain", content=body, headers=headers)
            waited = time.monotonic() - t0
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        retry = c.post("/webhooks/revtain", content=body, headers=headers)
    assert slow.status_code == 503 and slow.headers["retry-after"] == "5"
    assert 0.9 <= waited < 10  # answered by the sweep, not left hanging until the client gives up
    assert retry.status_code == 200
    assert [r["event_id"] for r in inbox_rows(db)] == ["evt_slow"]


def test_writer_process_exits_when_its_receiver_is_killed(tmp_path):
    proc, url = start_receiver_process(_db(tmp_path), tmp_path)
    try:
        child = httpx.get(f"{url}/healthz", timeout=10).json()["writer"]["pid"]
        assert not _gone(child)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 20
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_process(proc)
    assert _gone(child)


def test_writer_process_command_line_holds_no_secret_or_store_url(tmp_path):
    db = _db(tmp_path)
    with receiver(db) as c:
        pid = c.get("/healthz").json()["writer"]["pid"]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    text = b" ".join(argv).decode()
    assert "recovery_pipeline.webhooks.store_process" in text
    assert str(tmp_path) not in text
    assert not any(secret in text for secret in SECRETS.values())


def test_frames_cut_at_any_byte_are_reassembled_in_order():
    docs = [{"url": "sqlite:///x"}, [1, [["revtain", {"a": "b"}, "{\u00e9}"]], []], [2, True, 0.5, [["stored", True, "e"]]]]
    data = b"".join(encode_frame(d) for d in docs)
    for cut in range(len(data) + 1):
        buf = bytearray(data[:cut])
        got = take_frames(buf)
        buf += data[cut:]
        got += take_frames(buf)
        assert got == docs and not buf
