"""Group-commit writers for the webhook inbox: the event-loop side, and where the work runs.

A request calls ``await writer.deliver(provider, headers, raw_body)``. Once per event-loop turn the
deliveries gathered are handed off as one batch (at most ``max_batch``); the committing side takes
every batch already waiting (group commit: batches grow with load), admits each delivery
(:func:`~recovery_pipeline.webhooks.inbox.admit`: verify the raw bytes, then parse, then redact),
stores the accepted ones and a record of each refused one in ONE durable commit, and only then
answers: ``["stored", stored_now, event_id]``, ``["rejected", status, reason]`` or
``["unavailable", error]``. A dead writer or a batch older than ``commit_timeout_s`` raises
:class:`StoreUnavailable` (503: the provider retries); the timeout is one periodic sweep over the
batches in flight, not a timer per request.

Where that work runs:

* :class:`ProcessGroupCommitWriter` (the receiver's default): a child process
  (:mod:`recovery_pipeline.webhooks.store_process`) owns the store connection and does the
  verification, parsing and SQL. The event loop only ships raw deliveries (one socket write per
  commit) and reads the answers as ordinary loop I/O: no thread of the receiver competes with the
  loop for the GIL, and the per-event work runs on the other core. If the child dies, every batch
  in flight gets 503 and a new child is started.
* :class:`GroupCommitWriter`: a thread in the receiver process (embedded use, in-memory SQLite).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time

import sqlalchemy as sa

from recovery_pipeline.webhooks.inbox import MAX_BATCH, Committer, StoreUnavailable, WebhookAuth
from recovery_pipeline.webhooks.store_process import encode_frame, take_frames

log = logging.getLogger("recovery_pipeline.webhooks")

SWEEP_INTERVAL_S = 0.5
_STOP = object()


class _Item:
    __slots__ = ("kind", "row", "future")

    def __init__(self, kind: str, row: dict, future: asyncio.Future):
        self.kind, self.row, self.future = kind, row, future


def _fail_items(items: list[_Item], exc: BaseException) -> None:
    for it in items:
        if not it.future.done():
            it.future.set_exception(exc)


class _BatchingWriter(abc.ABC):
    """The loop side shared by both writers: per-turn batching, in-flight tracking, the sweep."""

    def __init__(self, auth: WebhookAuth, max_batch: int = MAX_BATCH, commit_timeout_s: float = 8.0):
        self.auth = auth
        self.max_batch = max(1, int(max_batch))
        self.commit_timeout_s = commit_timeout_s
        self._pending: list[_Item] = []
        self._handoff_scheduled = False
        self._inflight: dict[int, tuple[float, list[_Item]]] = {}  # batch seq -> (handed off at, items)
        self._seq = 0
        self._running = False  # cheap hot-path check
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.batches = 0  # commits
        self.items = 0  # requests resolved by those commits (deliveries + rejection records)
        self.rows = 0  # inbox rows inserted (duplicates excluded)
        self.commit_seconds = 0.0  # time inside the write transactions, lock wait included

    KIND = ""

    def stats(self) -> dict:
        return {"kind": self.KIND, "pid": self.pid, "batches": self.batches, "items": self.items,
                "rows": self.rows, "commit_seconds": round(self.commit_seconds, 3)}

    @property
    def pid(self) -> int | None:
        """The process whose connection commits (this one for the thread, else the child)."""
        return os.getpid()

    # producers (event loop side)
    async def deliver(self, provider: str, headers: dict[str, str], body: bytes) -> list:
        """Admit and store one delivery (``headers`` with lowercased names); see the module doc
        for the answer. Raises :class:`StoreUnavailable` when the writer is gone or too slow."""
        return await self._enqueue("delivery", (provider, headers, body))

    async def record_rejection(self, row: dict) -> None:
        await self._enqueue("rejection", row)

    def _enqueue(self, kind: str, row: dict) -> asyncio.Future:
        if not self._running:
            raise StoreUnavailable("inbox writer is not running")
        loop = self._loop
        fut = loop.create_future()
        self._pending.append(_Item(kind, row, fut))
        if not self._handoff_scheduled:  # one hand-off per loop turn
            self._handoff_scheduled = True
            loop.call_soon(self._handoff)
        return fut

    def _handoff(self) -> None:
        self._handoff_scheduled = False
        items, self._pending = self._pending, []
        if not items:
            return
        now = time.monotonic()
        for start in range(0, len(items), self.max_batch):
            chunk = items[start:start + self.max_batch]
            self._seq += 1
            self._inflight[self._seq] = (now, chunk)
            self._dispatch(self._seq, chunk)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    @abc.abstractmethod
    def _dispatch(self, seq: int, items: list[_Item]) -> None:
        """Hand batch ``seq`` to the committing side, which calls ``_settle`` when it is done."""

    def _sweep(self) -> None:
        self._sweeper = None
        deadline = time.monotonic() - self.commit_timeout_s
        for seq, (handed_off, items) in list(self._inflight.items()):
            if handed_off >= deadline:
                break  # in hand-off order: the rest are younger
            del self._inflight[seq]
            log.error("inbox commit timed out for %d requests", len(items))
            _fail_items(items, StoreUnavailable("inbox commit timed out"))
        if self._inflight and self._loop is not None and not self._loop.is_closed():
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _settle(self, seq: int, results: list[bool] | BaseException) -> None:
        """Resolve batch ``seq`` (on the loop): ``results`` per inbox item, or the failure."""
        entry = self._inflight.pop(seq, None)
        if entry is None:  # already failed by the sweep or a writer death
            return
        items = entry[1]
        if isinstance(results, BaseException):
            _fail_items(items, results)
            return
        self.items += len(items)
        it_results = iter(results)
        for it in items:
            value = next(it_results) if it.kind == "delivery" else None
            if value is not None and value[0] == "stored" and value[1]:
                self.rows += 1
            if not it.future.done():  # the request may have given up (disconnect)
                it.future.set_result(value)

    def _fail_inflight(self, exc: BaseException) -> None:
        inflight, self._inflight = self._inflight, {}
        for _, items in inflight.values():
            _fail_items(items, exc)

    @staticmethod
    def _split(items: list[_Item]) -> tuple[list, list[dict]]:
        return ([i.row for i in items if i.kind == "delivery"], [i.row for i in items if i.kind == "rejection"])


# --- the writer thread ----------------------------------------------------------------------------

class GroupCommitWriter(_BatchingWriter):
    """Commits on a thread of the receiver process (embedded use; the only choice for an
    in-memory SQLite store). The thread re-takes the GIL after every SQLite step, so under load
    it competes with the event loop: the receiver process uses the writer process instead."""

    KIND = "thread"

    def __init__(self, engine: sa.Engine, auth: WebhookAuth, max_batch: int = MAX_BATCH,
                 commit_timeout_s: float = 8.0):
        super().__init__(auth, max_batch, commit_timeout_s)
        self._committer = Committer(engine)
        self._q: queue.SimpleQueue = queue.SimpleQueue()  # (seq, items) or _STOP
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._run, name="inbox-group-commit", daemon=True)
            self._running = True
            self._thread.start()

    async def stop(self, timeout: float = 10) -> None:
        if self._thread is not None:
            self._q.put(_STOP)
            await asyncio.to_thread(self._thread.join, timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _dispatch(self, seq: int, items: list[_Item]) -> None:
        self._q.put((seq, items))

    def _run(self) -> None:
        try:
            carry = None
            while True:
                first = carry or self._q.get()
                carry = None
                if first is _STOP:
                    return
                groups, n, stop = [first], len(first[1]), False
                while True:  # every batch already waiting, up to max_batch requests
                    try:
                        nxt = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    if n + len(nxt[1]) > self.max_batch:
                        carry = nxt
                        break
                    groups.append(nxt)
                    n += len(nxt[1])
                self._commit(groups)
                if stop:
                    if carry is not None:
                        self._commit([carry])
                    return
        finally:
            self._running = False
            self._committer.close()

    def _commit(self, groups: list[tuple[int, list[_Item]]]) -> None:
        deliveries: list = []
        rejections: list[dict] = []
        for _, items in groups:
            a, b = self._split(items)
            deliveries += a
            rejections += b
        t0 = time.perf_counter()
        try:
            results, committed = self._committer.commit_deliveries(self.auth, deliveries, rejections)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave requests hanging
            log.exception("inbox writer failed")
            err = StoreUnavailable(f"inbox writer failed: {type(exc).__name__}")
            settled, seconds = [(seq, err) for seq, _ in groups], None
        else:
            seconds = time.perf_counter() - t0 if committed else None
            settled, pos = [], 0
            for seq, items in groups:
                n = sum(1 for i in items if i.kind == "delivery")
                settled.append((seq, results[pos:pos + n]))
                pos += n
        try:
            self._loop.call_soon_threadsafe(self._settle_commit, settled, seconds)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _settle_commit(self, settled: list, seconds: float | None) -> None:
        if seconds is not None:
            self.batches += 1
            self.commit_seconds += seconds
        for seq, results in settled:
            self._settle(seq, results)


# --- the writer process ---------------------------------------------------------------------------

class _FrameProtocol(asyncio.Protocol):
    def __init__(self, owner: ProcessGroupCommitWriter):
        self.owner = owner
        self.buf = bytearray()
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for frame in take_frames(self.buf):
            self.owner._on_frame(frame)

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.owner._on_lost()


class ProcessGroupCommitWriter(_BatchingWriter):
    """Commits in a child process (``python -m recovery_pipeline.webhooks.store_process``) that
    owns the store connection, over a socket pair: one length-prefixed orjson frame per batch, one
    reply per batch. The store URL (it may hold a password) travels over the socket, never argv."""

    KIND = "process"
    START_TIMEOUT_S = 60.0
    PIPELINE_DEPTH = 2

    def __init__(self, url: str, auth: WebhookAuth, max_batch: int = MAX_BATCH,
                 commit_timeout_s: float = 8.0):
        super().__init__(auth, max_batch, commit_timeout_s)
        self._url = url
        self._proc: subprocess.Popen | None = None
        self._transport: asyncio.Transport | None = None
        self._protocol: _FrameProtocol | None = None
        self._ready: asyncio.Future | None = None
        self._stopping = False
        self._restart_task: asyncio.Task | None = None
        # group commit on the loop side too: new batches wait here while PIPELINE_DEPTH writes
        # are unanswered, then go as ONE socket write (one write and one child wake-up per commit
        # instead of per loop turn; with depth 2 the child finds the next group waiting when a
        # commit ends)
        self._outbox: list[bytes] = []
        self._unanswered: collections.deque[int] = collections.deque()  # frames per write, in order

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        await self._spawn()

    async def _spawn(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "recovery_pipeline.webhooks.store_process", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self._ready = self._loop.create_future()
        self._transport, self._protocol = await self._loop.create_unix_connection(
            lambda: _FrameProtocol(self), sock=parent)
        self._transport.write(encode_frame({"url": self._url, "max_batch": self.max_batch,
                                            "secrets": self.auth.secrets,
                                            "slicker_basic": self.auth.slicker_basic}))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.START_TIMEOUT_S)
        except BaseException:
            await self._close_child()
            raise
        self._running = True

    def _on_frame(self, frame) -> None:
        if isinstance(frame, dict):  # control: {"ready": true} or {"error": "..."}
            if self._ready is not None and not self._ready.done():
                if frame.get("ready"):
                    self._ready.set_result(None)
                else:
                    self._ready.set_exception(StoreUnavailable(frame.get("error") or "writer failed to start"))
            return
        seq, commit_first, seconds, results = frame
        if self._unanswered:  # replies come in the order the frames were written
            self._unanswered[0] -= 1
            if self._unanswered[0] <= 0:
                self._unanswered.popleft()
        if self._outbox and len(self._unanswered) < self.PIPELINE_DEPTH:
            self._flush()
        if commit_first:
            self.batches += 1
            self.commit_seconds += seconds
        if isinstance(results, str):  # the child could not run the batch at all
            self._settle(seq, StoreUnavailable(f"inbox writer failed: {results}"))
        else:
            self._settle(seq, results)

    def _on_lost(self) -> None:
        was_running, self._running = self._running, False
        self._transport = None
        self._outbox = []
        self._unanswered.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(StoreUnavailable("inbox writer process exited during start"))
        self._fail_inflight(StoreUnavailable("inbox writer process exited"))
        if was_running and not self._stopping:
            log.error("inbox writer process exited; starting a new one")
            self._restart_task = self._loop.create_task(self._restart())

    async def _restart(self) -> None:
        delay = 0.2
        while not self._stopping:
            await self._close_child()
            try:
                await self._spawn()
                return
            except Exception as exc:  # noqa: BLE001 - keep trying; requests meanwhile get 503
                log.error("inbox writer process restart failed: %s", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _dispatch(self, seq: int, items: list[_Item]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self._settle(seq, StoreUnavailable("inbox writer process is not running"))
            return
        deliveries, rejections = self._split(items)
        # raw bodies travel as latin-1 text: byte-for-byte, so the child verifies the exact bytes
        self._outbox.append(encode_frame([seq, [(p, h, b.decode("latin-1")) for p, h, b in deliveries],
                                          rejections]))
        if len(self._unanswered) < self.PIPELINE_DEPTH:
            self._flush()

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        self._unanswered.append(len(frames))
        self._transport.write(b"".join(frames) if len(frames) > 1 else frames[0])

    @property
    def alive(self) -> bool:
        return self._running and self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def _close_child(self, timeout: float = 10) -> None:
        if self._transport is not None:
            self._transport.close()  # EOF: the child commits what it has read, replies, exits
            if self._protocol is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._protocol.closed), timeout)
                except TimeoutError:
                    pass
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)

    async def stop(self, timeout: float = 10) -> None:
        self._stopping = True
        if self._restart_task is not None:
            self._restart_task.cancel()
            self._restart_task = None
        self._running = False
        await self._close_child(timeout)
        self._fail_inflight(StoreUnavailable("inbox writer stopped"))


def make_writer(url: str, engine: sa.Engine, auth: WebhookAuth, kind: str = "process",
                max_batch: int = MAX_BATCH, commit_timeout_s: float = 8.0) -> _BatchingWriter:
    """The writer for ``kind`` ("process" or "thread"); an in-memory SQLite store is only
    reachable from this process, so it always gets the thread."""
    database = engine.url.database or ""
    in_memory = engine.dialect.name == "sqlite" and (not database or database == ":memory:"
                                                      or "mode=memory" in str(engine.url))
    if kind == "thread" or in_memory:
        return GroupCommitWriter(engine, auth, max_batch=max_batch, commit_timeout_s=commit_timeout_s)
    if kind != "process":
        raise ValueError(f"unknown inbox writer {kind!r} (expected 'process' or 'thread')")
    return ProcessGroupCommitWriter(url, auth, max_batch=max_batch, commit_timeout_s=commit_timeout_s)


