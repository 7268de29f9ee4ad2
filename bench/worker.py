"""Load and observation processes: ``python -m bench.worker`` reads one job (msgpack) on stdin.

Jobs:

- ``requests``: closed loop over ``connections`` sockets, ``depth`` requests in
  flight on each, from ``start_at`` to ``end_at`` (``time.monotonic()``).
- ``gtwrite``: ``threads`` writers appending like gt (flock the sidecar, open
  O_APPEND, one write, optional fdatasync, close, unlock), same window.
- ``subscribe``: ``connections`` subscribers; records when each pushed event
  arrives (its ``payload.n``) until each has ``expect`` events or ``deadline``.
- ``watch``: a bare watchfiles watcher on a log (the external-line baseline),
  records when each new line is read, like ``subscribe``.

Each prints one msgpack result on stdout. All times are ``time.monotonic_ns()``,
which is system-wide, so the parent can compare them with its own.
"""

from __future__ import annotations

import fcntl
import os
import selectors
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

MAX_SAMPLES = 400_000


class _Reply(msgspec.Struct):
    id: int | str | None = None
    ok: bool | None = None
    push: str | None = None
    event: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _Marks(msgspec.Struct):
    n: int = -1
    t: int = 0


class _Event(msgspec.Struct):
    payload: _Marks | None = None


_reply_decoder = msgspec.json.Decoder(_Reply)
_event_decoder = msgspec.json.Decoder(_Event)


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _touch(path: str | None) -> None:
    if path:
        Path(path).write_bytes(b"ready")


# ------------------------------------------------------------------ requests


class _Conn:
    __slots__ = ("buffer", "inflight", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.inflight: dict[int, int] = {}


def run_requests(job: dict[str, Any]) -> dict[str, Any]:
    prefix: bytes = job["prefix"]
    suffix: bytes = job["suffix"]
    depth: int = job["depth"]
    start_at: float = job["start_at"]
    end_at: float = job["end_at"]
    start_ns = int(start_at * 1e9)
    end_ns = int(end_at * 1e9)
    conns: list[_Conn] = []
    selector = selectors.DefaultSelector()
    for _ in range(job["connections"]):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(job["socket"])
        sock.setblocking(False)
        conn = _Conn(sock)
        conns.append(conn)
        selector.register(sock, selectors.EVENT_READ, conn)
    next_id = job.get("first_id", 1)
    latencies: list[int] = []
    count = 0
    errors = 0
    _touch(job.get("ready_file"))
    late_s = max(0.0, time.monotonic() - start_at)
    _sleep_until(start_at)

    def fill(conn: _Conn, now: int) -> None:
        nonlocal next_id
        frames = []
        while len(conn.inflight) < depth:
            conn.inflight[next_id] = now
            frames.append(prefix + str(next_id).encode() + suffix)
            next_id += 1
        if frames:
            conn.sock.sendall(b"".join(frames))

    now = time.monotonic_ns()
    for conn in conns:
        fill(conn, now)
    open_conns = len(conns)
    hard_stop = end_ns + 10_000_000_000
    while open_conns and time.monotonic_ns() < hard_stop:
        for key, _ in selector.select(timeout=1.0):
            conn = key.data
            try:
                data = conn.sock.recv(1 << 18)
            except BlockingIOError:
                continue
            now = time.monotonic_ns()
            if not data:
                raise RuntimeError("the server closed a connection")
            buffer = conn.buffer + data
            lines = buffer.split(b"\n")
            conn.buffer = lines.pop()
            for line in lines:
                reply = _reply_decoder.decode(line)
                sent = conn.inflight.pop(reply.id, None)
                if sent is None:
                    continue
                if reply.ok is False:
                    errors += 1
                    continue
                if start_ns <= now <= end_ns:
                    count += 1
                    if len(latencies) < MAX_SAMPLES:
                        latencies.append(now - sent)
            if now < end_ns:
                fill(conn, now)
            elif not conn.inflight:
                selector.unregister(conn.sock)
                open_conns -= 1
    for conn in conns:
        conn.sock.close()
    return {"count": count, "errors": errors, "lat_ns": latencies, "late_s": late_s}


# ------------------------------------------------------------------ gt writes


def run_gtwrite(job: dict[str, Any]) -> dict[str, Any]:
    events: str = job["events"]
    lock: str = job["lock"]
    line: bytes = job["line"]
    sync: bool = job["sync"]
    start_at: float = job["start_at"]
    end_ns = int(job["end_at"] * 1e9)
    results: list[list[int]] = []

    def writer() -> None:
        latencies: list[int] = []
        _sleep_until(start_at)
        while True:
            started = time.monotonic_ns()
            if started >= end_ns:
                break
            lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, line)
                    if sync:
                        os.fdatasync(fd)
                finally:
                    os.close(fd)
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(lock_fd)
            done = time.monotonic_ns()
            if done <= end_ns:
                latencies.append(done - started)
        results.append(latencies)

    late_s = max(0.0, time.monotonic() - start_at)
    threads = [threading.Thread(target=writer) for _ in range(job["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = [value for chunk in results for value in chunk]
    return {
        "count": len(latencies),
        "errors": 0,
        "lat_ns": latencies[:MAX_SAMPLES],
        "late_s": late_s,
    }


# ------------------------------------------------------------------ subscribe


def run_subscribe(job: dict[str, Any]) -> dict[str, Any]:
    expect: int = job["expect"]
    deadline: float = job["deadline"]
    selector = selectors.DefaultSelector()
    conns: list[_Conn] = []
    for _ in range(job["connections"]):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(job["socket"])
        sock.sendall(job["frame"])
        conns.append(_Conn(sock))
    # Wait for every subscription to be acknowledged before saying ready.
    for conn in conns:
        conn.sock.settimeout(30)
        while b"\n" not in conn.buffer:
            data = conn.sock.recv(1 << 16)
            if not data:
                raise RuntimeError("the server closed a subscriber")
            conn.buffer += data
        first, _, rest = conn.buffer.partition(b"\n")
        if _reply_decoder.decode(first).ok is not True:
            raise RuntimeError(f"subscribe refused: {first[:300]!r}")
        conn.buffer = rest
        conn.sock.setblocking(False)
    for index, conn in enumerate(conns):
        selector.register(conn.sock, selectors.EVENT_READ, index)
    _touch(job.get("ready_file"))
    # (connection, n, t written by the producer, arrival)
    arrivals: list[tuple[int, int, int, int]] = []
    got = [0] * len(conns)
    remaining = len(conns)

    def consume(index: int, lines: list[bytes], now: int) -> None:
        nonlocal remaining
        for line in lines:
            reply = _reply_decoder.decode(line)
            if reply.push != "event" or not len(reply.event):
                continue
            marks = _event_decoder.decode(reply.event).payload or _Marks()
            arrivals.append((index, marks.n, marks.t, now))
            got[index] += 1
            if got[index] == expect:
                remaining -= 1

    pending = [conn.buffer.split(b"\n") for conn in conns]
    now = time.monotonic_ns()
    for index, conn in enumerate(conns):
        conn.buffer = pending[index].pop()
        consume(index, pending[index], now)
    while remaining > 0 and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            index = key.data
            conn = conns[index]
            try:
                data = conn.sock.recv(1 << 18)
            except BlockingIOError:
                continue
            now = time.monotonic_ns()
            if not data:
                selector.unregister(conn.sock)
                remaining -= 1
                continue
            lines = (conn.buffer + data).split(b"\n")
            conn.buffer = lines.pop()
            consume(index, lines, now)
    for conn in conns:
        conn.sock.close()
    return {"arrivals": arrivals}


# ------------------------------------------------------------------ watch


def run_watch(job: dict[str, Any]) -> dict[str, Any]:
    import watchfiles

    path = Path(job["events"])
    expect: int = job["expect"]
    deadline: float = job["deadline"]
    step_ms: int = job["step_ms"]
    offset = path.stat().st_size if path.exists() else 0
    arrivals: list[tuple[int, int, int, int]] = []
    stop = threading.Event()

    def stop_at_deadline() -> None:
        while not stop.wait(0.2):
            if time.monotonic() >= deadline or len(arrivals) >= expect:
                stop.set()

    threading.Thread(target=stop_at_deadline, daemon=True).start()
    carry = b""
    for _changes in watchfiles.watch(
        path.parent,
        watch_filter=lambda _change, changed: Path(changed).name == path.name,
        recursive=False,
        step=step_ms,
        debounce=max(step_ms * 5, 50),
        stop_event=stop,
        rust_timeout=1000,
        yield_on_timeout=False,
        ignore_permission_denied=True,
    ):
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
        offset += len(data)
        now = time.monotonic_ns()
        lines = (carry + data).split(b"\n")
        carry = lines.pop()
        for line in lines:
            marks = _event_decoder.decode(line).payload or _Marks()
            arrivals.append((0, marks.n, marks.t, now))
    return {"arrivals": arrivals}


def watch_ready_hook(job: dict[str, Any]) -> None:
    """The watcher is armed once its thread runs; give it a moment, then say ready."""
    time.sleep(0.3)
    _touch(job.get("ready_file"))


JOBS = {
    "requests": run_requests,
    "gtwrite": run_gtwrite,
    "subscribe": run_subscribe,
    "watch": run_watch,
}


def main() -> int:
    job = msgspec.msgpack.decode(sys.stdin.buffer.read())
    if job["kind"] == "watch":
        threading.Thread(target=watch_ready_hook, args=(job,), daemon=True).start()
    result = JOBS[job["kind"]](job)
    sys.stdout.buffer.write(msgspec.msgpack.encode(result))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
