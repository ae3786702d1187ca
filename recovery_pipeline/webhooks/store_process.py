"""The inbox writer process: commits the receiver's batches (``python -m ...store_process FD``).

Started by :class:`recovery_pipeline.webhooks.writers.ProcessGroupCommitWriter` with one end of a
socket pair as ``FD``. Protocol (each frame: 4-byte big-endian length + orjson):

* first frame in: ``{"url": ops store URL, "max_batch": n, "secrets": {...}, "slicker_basic": ..}``
  (secrets and URL travel here, never in argv); reply ``{"ready": true}`` once the store is open
  (or ``{"error": reason}``);
* then per batch in: ``[seq, [[provider, headers, raw body as latin-1 text], ...], [rejection rows]]``;
  out, after the commit: ``[seq, first_of_commit, commit_seconds, [result per delivery]]`` with
  the results of :meth:`~recovery_pipeline.webhooks.inbox.Committer.commit_deliveries`.

Every batch already waiting on the socket joins the same commit, up to ``max_batch`` requests
(group commit). End of input (the receiver stopped or died) -> commit what was read, reply, exit.
SIGINT is ignored: Ctrl-C reaches the whole process group, and the receiver shuts this down itself.
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import struct
import sys
import time
from collections import deque
from datetime import datetime

import orjson

log = logging.getLogger("recovery_pipeline.webhooks.store_process")
_LEN = struct.Struct("!I")


def encode_frame(doc) -> bytes:
    payload = orjson.dumps(doc)
    return _LEN.pack(len(payload)) + payload


def take_frames(buf: bytearray) -> list:
    """Decode and remove every complete frame at the start of ``buf``."""
    pos, n, out = 0, len(buf), []
    while n - pos >= 4:
        (size,) = _LEN.unpack_from(buf, pos)
        if n - pos - 4 < size:
            break
        out.append(orjson.loads(bytes(buf[pos + 4:pos + 4 + size])))
        pos += 4 + size
    if pos:
        del buf[:pos]
    return out


class _Frames:
    """Length-prefixed frames from a blocking socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()
        self.frames: deque = deque()
        self.eof = False

    def _recv(self, block: bool) -> bool:
        try:
            data = self.sock.recv(1 << 20, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        self.frames.extend(take_frames(self.buf))
        return True

    def next_blocking(self):
        while not self.frames and not self.eof:
            self._recv(block=True)
        return self.frames.popleft() if self.frames else None

    def drain_available(self) -> None:
        while not self.eof and self._recv(block=False):
            pass


def _rows(rows: list[dict]) -> list[dict]:
    for row in rows:
        if isinstance(row.get("received_at"), str):
            row["received_at"] = datetime.fromisoformat(row["received_at"])
    return rows


def serve(sock: socket.socket) -> int:
    from recovery_pipeline.opsstore.store import create_ops_engine
    from recovery_pipeline.webhooks.inbox import MAX_BATCH, Committer, WebhookAuth

    frames = _Frames(sock)
    send = sock.sendall
    config = frames.next_blocking()
    if config is None:
        return 0
    try:
        engine = create_ops_engine(config["url"], durable=True)
        committer = Committer(engine)
        max_batch = max(1, int(config.get("max_batch") or MAX_BATCH))
        auth = WebhookAuth(secrets=dict(config.get("secrets") or {}), slicker_basic=config.get("slicker_basic"))
        if "stripe" in auth.secrets:
            import stripe  # noqa: F401 - warm the import before the first delivery
    except Exception as exc:  # noqa: BLE001
        send(encode_frame({"error": f"cannot open the ops store: {type(exc).__name__}"}))
        return 1
    gc.collect()
    gc.freeze()  # what is loaded now lives as long as the process: keep it out of the GC's passes
    send(encode_frame({"ready": True}))
    try:
        while True:
            first = frames.next_blocking()
            if first is None:
                return 0
            frames.drain_available()
            group, n = [first], len(first[1]) + len(first[2])
            while frames.frames:
                size = len(frames.frames[0][1]) + len(frames.frames[0][2])
                if n + size > max_batch:
                    break
                group.append(frames.frames.popleft())
                n += size
            deliveries = [(p, h, b.encode("latin-1")) for _, dels, _ in group for p, h, b in dels]
            rejections = [row for _, _, rej in group for row in _rows(rej)]
            t0 = time.perf_counter()
            try:
                results, committed = committer.commit_deliveries(auth, deliveries, rejections)
            except Exception as exc:  # noqa: BLE001 - a bug must not leave the receiver waiting
                log.exception("inbox writer failed")
                out = b"".join(encode_frame([seq, False, 0.0, type(exc).__name__]) for seq, _, _ in group)
            else:
                seconds = time.perf_counter() - t0
                parts, pos = [], 0
                for k, (seq, dels, _) in enumerate(group):
                    parts.append(encode_frame([seq, committed and k == 0, seconds, results[pos:pos + len(dels)]]))
                    pos += len(dels)
                out = b"".join(parts)
            try:
                send(out)
            except OSError:  # the receiver is gone: what was committed stays committed
                return 0
    finally:
        committer.close()
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=int(args[0]))
    try:
        return serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    raise SystemExit(main())
