"""Query: the 20 newest ``session_start`` lines via the daemon vs gt seance's full scan."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

import msgspec

from bench.context import Context
from bench.harness import Row, fmt_ratio, fmt_time, median
from bench.harness import percentile as pct

LIMIT = 20
TYPE = "session_start"


class GtEvent(msgspec.Struct):
    """gt's Event as seance decodes it: every field, the payload as a generic map."""

    ts: str
    source: str
    type: str
    actor: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    visibility: str = ""


def full_scan(path: Path) -> list[bytes]:
    """Decode every line (skipping bad ones), keep the newest ``LIMIT`` of ``TYPE``."""
    decoder = msgspec.json.Decoder(GtEvent)
    newest: deque[bytes] = deque(maxlen=LIMIT)
    with open(path, "rb") as handle:
        for line in handle:
            try:
                event = decoder.decode(line)
            except msgspec.DecodeError:
                continue
            if event.type == TYPE:
                newest.append(line.rstrip(b"\n"))
    return list(reversed(newest))


def run(ctx: Context, names: list[str]) -> list[Row]:
    sizes = ctx.sizes
    daemon = ctx.big_daemon()
    times: list[float] = []
    with daemon.client() as client:
        for _ in range(10):
            got = client.query(types=[TYPE], limit=LIMIT).events
        for _ in range(sizes.query_reps):
            started = time.perf_counter_ns()
            got = client.query(types=[TYPE], limit=LIMIT).events
            times.append((time.perf_counter_ns() - started) / 1e9)
        indexed = client.status().eventlog
    log = ctx.big_log()
    scans: list[float] = []
    expected: list[bytes] = []
    for _ in range(sizes.scan_reps):
        started = time.perf_counter_ns()
        expected = full_scan(log)
        scans.append((time.perf_counter_ns() - started) / 1e9)
    same = [bytes(raw) for raw in got] == expected
    q50, s50 = median(times), median(scans)
    speedup = s50 / q50
    return [
        Row(
            name="query",
            what=f"20 newest `session_start`, {ctx.lines_label}-line log, `query` via `Client`",
            baseline=f"full scan decoding every line with msgspec: {fmt_time(s50)}",
            median=fmt_time(q50),
            p99=fmt_time(pct(times, 99)),
            ratio=fmt_ratio(speedup) + " faster",
            goal="≥ 100× and ≤ 10 ms median",
            met=speedup >= 100 and q50 <= 0.010 and same,
            note=("" if same else "the daemon's answer differs from the full scan's! ")
            + f"{indexed.lines:,} lines indexed, {indexed.malformed} malformed",
            data={
                "p50_s": q50,
                "p99_s": pct(times, 99),
                "scan_s": scans,
                "speedup": speedup,
                "same_answer": same,
                "indexed_lines": indexed.lines,
                "malformed": indexed.malformed,
            },
        )
    ]
