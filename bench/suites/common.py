"""Pieces several suites use: request templates, the baseline broker, closed-loop runs."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench.harness import PYTHON, median, ns_to_s, run_workers, split, wait_for_socket
from gastown_client import codec
from gastown_client.protocol import Emit, Request

ID_MARK = -987654321
# Worker processes get this long to start and connect before the window opens.
START_MARGIN_S = 1.0

# A typical nudge, as an emit request and as the line gt would write for it.
NUDGE_ACTOR = "gastown/polecats/nux"
NUDGE_PAYLOAD: dict[str, Any] = {
    "reason": "[from gastown/witness] you have been idle for 10m: check your hook and "
    "run the tests again",
    "rig": "gastown",
    "target": "gastown/polecats/nux",
}


def nudge_emit() -> Emit:
    return Emit(type="nudge", actor=NUDGE_ACTOR, payload=dict(NUDGE_PAYLOAD))


def template(request: Request) -> tuple[bytes, bytes]:
    """``request`` encoded as a frame, split around its id (workers number requests)."""
    request.id = ID_MARK
    frame = codec.encode_frame(request)
    prefix, mark, suffix = frame.partition(str(ID_MARK).encode())
    assert mark, frame
    return prefix, suffix


def gt_append_many(town: Path, lines: list[bytes], batch: int = 500) -> None:
    """Append like gt does (flock the sidecar, O_APPEND), a batch of lines per write."""
    with open(town / ".events.jsonl.lock", "a") as lock:
        fd = os.open(town / ".events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            for start in range(0, len(lines), batch):
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    os.write(fd, b"".join(lines[start : start + batch]))
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def gt_line(event_type: str, actor: str, payload: dict[str, Any], ts: str) -> bytes:
    """One line as gt writes it (field order, sorted payload keys), newline included."""
    body = msgspec.json.encode(payload, order="sorted")
    line = (
        b'{"ts":"'
        + ts.encode()
        + b'","source":"gt","type":"'
        + event_type.encode()
        + b'","actor":'
        + msgspec.json.encode(actor)
        + b',"payload":'
        + body
        + b',"visibility":"feed"}\n'
    )
    return line


@dataclass
class LoadResult:
    count: int
    errors: int
    window_s: float
    latencies_s: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.window_s


@dataclass
class Pooled:
    """Several windows of the same load: the median rate, every latency."""

    rates: list[float]
    errors: int
    latencies_s: list[float]

    @classmethod
    def of(cls, results: list[LoadResult]) -> Pooled:
        return cls(
            rates=[r.rate for r in results],
            errors=sum(r.errors for r in results),
            latencies_s=[v for r in results for v in r.latencies_s],
        )

    @property
    def rate(self) -> float:
        return median(self.rates)


def alternate(
    rounds: int, ours: Callable[[], LoadResult], theirs: Callable[[], LoadResult]
) -> tuple[Pooled, Pooled]:
    """Run ``ours`` and ``theirs`` in turn ``rounds`` times: drift on a noisy host hits both."""
    a: list[LoadResult] = []
    b: list[LoadResult] = []
    for _ in range(rounds):
        a.append(ours())
        b.append(theirs())
    return Pooled.of(a), Pooled.of(b)


def closed_loop(
    socket_path: Path,
    request: Request,
    clients: int,
    window_s: float,
    *,
    depth: int = 1,
    processes: int = 4,
) -> LoadResult:
    """``clients`` connections spread over worker processes, ``depth`` requests in flight each."""
    prefix, suffix = template(request)
    shares = split(clients, processes)
    start_at = time.monotonic() + START_MARGIN_S + 0.1 * len(shares)
    jobs = [
        {
            "kind": "requests",
            "socket": str(socket_path),
            "connections": share,
            "depth": depth,
            "prefix": prefix,
            "suffix": suffix,
            "start_at": start_at,
            "end_at": start_at + window_s,
            "first_id": 1,
        }
        for share in shares
    ]
    results = run_workers(jobs)
    return _merge(results, window_s)


def gt_writers(
    events: Path, lock: Path, line: bytes, writers: int, window_s: float, *, processes: int = 4
) -> LoadResult:
    """The durable gt-style baseline: flock, O_APPEND, write, fdatasync, close, per event."""
    shares = split(writers, processes)
    start_at = time.monotonic() + START_MARGIN_S + 0.1 * len(shares)
    jobs = [
        {
            "kind": "gtwrite",
            "events": str(events),
            "lock": str(lock),
            "line": line,
            "threads": share,
            "sync": True,
            "start_at": start_at,
            "end_at": start_at + window_s,
        }
        for share in shares
    ]
    return _merge(run_workers(jobs), window_s)


def _merge(results: list[dict[str, Any]], window_s: float) -> LoadResult:
    late = max(r.get("late_s", 0.0) for r in results)
    if late > 0:
        print(f"  warning: a load worker started {late * 1000:.0f} ms late", file=sys.stderr)
    return LoadResult(
        count=sum(r["count"] for r in results),
        errors=sum(r["errors"] for r in results),
        window_s=window_s,
        latencies_s=[v for r in results for v in ns_to_s(r["lat_ns"])],
    )


def broker() -> AbstractContextManager[Path]:
    """The baseline asyncio broker (``bench.broker``) on a fresh socket."""
    return baseline_server("bench.broker")


@contextmanager
def baseline_server(module: str, *args: str) -> Iterator[Path]:
    """``python -m <module> <socket> <args>``, a baseline server, on a fresh socket."""
    folder = Path(tempfile.mkdtemp(prefix="gtb-baseline-", dir="/tmp"))
    path = folder / "server.sock"
    proc = subprocess.Popen(
        [PYTHON, "-m", module, str(path), *args], cwd=Path(__file__).resolve().parents[2]
    )
    try:
        wait_for_socket(path)
        yield path
    finally:
        proc.terminate()
        proc.wait(10)
        path.unlink(missing_ok=True)
        folder.rmdir()
