"""Start-up time and resident memory, on an empty town and on the big log.

Cold start (no snapshot), restart after a clean stop, and restart after
``kill -9`` with lines appended since the last clean stop (the daemon had
written periodic index checkpoints meanwhile). A cold start serves at once
and indexes in the background: it is timed to the first answered ``ping``,
``emit`` and hook call, and to the index being complete, which is compared
with decoding the file's lines with msgspec, in this process, in the same
run: what any reader of the log must pay.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bench.context import Context
from bench.harness import (
    PYTHON,
    Daemon,
    Row,
    fmt_mb,
    fmt_ratio,
    fmt_time,
    make_town,
    median,
    remove_town,
    start_daemon,
    time_process,
)
from bench.harness import percentile as pct
from bench.suites.common import NUDGE_ACTOR, NUDGE_PAYLOAD, gt_append_many, gt_line
from gastown_client.protocol import Hook

SETTLE_S = 1.0
# Lines appended (gt-style) between the cold start and the kill -9.
APPENDED_FULL = 200_000
APPENDED_QUICK = 20_000


def decode_file(path: Path) -> float:
    """Seconds to decode every line of ``path`` into the fields the index keeps."""
    from gastownd.core.events import decode_lines

    started = time.perf_counter()
    carry = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(16 << 20):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            decode_lines(data[: cut - 1].split(b"\n"))
            carry = data[cut:]
    return time.perf_counter() - started


@dataclass
class ColdStart:
    """Seconds from exec to each first answer, and to the index being complete."""

    ping_s: float
    emit_s: float
    hook_s: float
    indexed_s: float


def _session_start() -> Hook:
    payload = {
        "session_id": "00000001-3caa-4bbb-8ccc-123456789abc",
        "transcript_path": "/tmp/bench-session.jsonl",
        "cwd": "/tmp",
        "hook_event_name": "SessionStart",
        "source": "startup",
    }
    return Hook(
        payload=msgspec.Raw(json.dumps(payload).encode()),
        env={"GT_ROLE": "gastown/crew/bench", "GT_SESSION": "gt-bench"},
        cwd="/tmp",
    )


def cold_start(daemon: Daemon, timeout_s: float = 120.0) -> ColdStart:
    """Time a started daemon's first answers (its first ping is ``wait_ready``'s), then
    wait for its background index."""
    ping_s = daemon.ready_after_s
    with daemon.client() as client:
        client.emit("bench_first", "bench", {})
        emit_s = time.monotonic() - daemon.started
        client.call(_session_start())
        hook_s = time.monotonic() - daemon.started
        deadline = time.monotonic() + timeout_s
        while getattr(client.status(), "indexing", None) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError("the background index did not finish")
            time.sleep(0.005)
        indexed_s = time.monotonic() - daemon.started
    return ColdStart(ping_s, emit_s, hook_s, indexed_s)


def restart_after_kill(log: Path, appended: int) -> tuple[float, float, int]:
    """Cold start, append ``appended`` lines, kill -9, start again: (cold, restart) seconds."""
    town = make_town(log=log)
    try:
        daemon = start_daemon(town)
        cold = cold_start(daemon).indexed_s
        snapshot = town / ".gastownd" / "index.snapshot"
        deadline = time.monotonic() + 120
        while not snapshot.exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # the first checkpoint, after the cold start
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = gt_line("nudge", NUDGE_ACTOR, NUDGE_PAYLOAD, stamp)
        gt_append_many(town, [line] * appended)
        total = (town / ".events.jsonl").read_bytes().count(b"\n")
        deadline = time.monotonic() + 120
        with daemon.client() as client:
            while client.status().eventlog.lines < total and time.monotonic() < deadline:
                time.sleep(0.1)
        daemon.kill()
        again = start_daemon(town)
        restarted = again.ready_after_s
        again.stop()
        return cold, restarted, total
    finally:
        remove_town(town)


_SELF_RSS = (
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmRSS:'): print(line.split()[1])"
)


def bare_python_rss_kb() -> int:
    """VmRSS of a bare interpreter (same venv, site imported)."""
    out = subprocess.run([PYTHON, "-c", _SELF_RSS], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def run(ctx: Context, names: list[str]) -> list[Row]:
    sizes = ctx.sizes
    empty_times: list[float] = []
    empty_rss: list[int] = []
    for _ in range(sizes.startup_reps):
        town = make_town()
        try:
            daemon = start_daemon(town)
            try:
                empty_times.append(daemon.ready_after_s)
                time.sleep(SETTLE_S if not empty_rss else 0.2)
                empty_rss.append(daemon.rss_kb())
            finally:
                daemon.stop()
        finally:
            remove_town(town)
    python_times = [time_process([PYTHON, "-c", "pass"]) for _ in range(sizes.startup_reps)]

    big_times: list[float] = []
    colds: list[ColdStart] = []
    warm_times: list[float] = []
    killed: tuple[float, float, int] | None = None
    decode_s = float("nan")
    if "startup" in names:
        log = ctx.big_log()
        decode_s = min(decode_file(log) for _ in range(2))
        appended = APPENDED_QUICK if ctx.quick else APPENDED_FULL
        killed = restart_after_kill(log, appended)
        for _ in range(max(1, sizes.big_startup_reps - 1)):
            town = make_town(log=log)
            try:
                daemon = start_daemon(town)
                colds.append(cold_start(daemon))
                big_times.append(colds[-1].indexed_s)
                daemon.stop()  # a clean stop saves the index snapshot
                again = start_daemon(town)
                warm_times.append(again.ready_after_s)
                again.stop()
            finally:
                remove_town(town)
    big = ctx.big_daemon()
    colds.append(cold_start(big))
    big_times.append(colds[-1].indexed_s)
    time.sleep(SETTLE_S)
    big_rss = big.rss_kb()
    bare_rss = bare_python_rss_kb()

    rows: list[Row] = []
    e50, p50 = median(empty_times), median(python_times)
    b50 = median(big_times)
    lines = sizes.lines
    per_line = (b50 - e50) / lines
    if "startup" in names:
        rows.append(
            Row(
                name="startup",
                what="start-up to accepting connections (first `ping`), empty town",
                baseline=f"`python -c pass`: {fmt_time(p50)} / {fmt_time(pct(python_times, 99))}",
                median=fmt_time(e50),
                p99=fmt_time(pct(empty_times, 99)),
                ratio=fmt_ratio(e50 / p50),
                goal="≤ 10× baseline",
                met=e50 <= 10 * p50,
                data={"times_s": empty_times, "baseline_times_s": python_times},
            )
        )
        first = [max(c.ping_s, c.emit_s, c.hook_s) for c in colds]
        rows.append(
            Row(
                name="startup",
                what=f"exec to first answered `ping` / `emit` / hook, {ctx.lines_label}-line "
                "log, no snapshot",
                baseline=f"`python -c pass`: {fmt_time(p50)}",
                median=" / ".join(
                    fmt_time(median([getattr(c, f) for c in colds]))
                    for f in ("ping_s", "emit_s", "hook_s")
                ),
                p99=fmt_time(pct(first, 99)),
                ratio=fmt_ratio(median(first) / p50),
                goal="≤ 300 ms",
                met=median(first) <= 0.3,
                note="the socket serves once the log's tail is indexed; older lines are "
                "indexed in the background (`status.indexing`)",
                data={
                    "ping_s": [c.ping_s for c in colds],
                    "emit_s": [c.emit_s for c in colds],
                    "hook_s": [c.hook_s for c in colds],
                    "baseline_times_s": python_times,
                },
            )
        )
        rows.append(
            Row(
                name="startup",
                what=f"exec to fully indexed, {ctx.lines_label}-line log, no snapshot",
                baseline=f"decoding every line of the file with msgspec: {fmt_time(decode_s)}",
                median=fmt_time(b50),
                p99=fmt_time(pct(big_times, 99)),
                ratio=fmt_ratio(b50 / decode_s),
                goal="≤ 1.5 s and ≤ 3× baseline",
                met=b50 <= 1.5 and b50 <= 3 * decode_s,
                note=f"indexing costs about {per_line * 1e6:.1f} µs a line "
                f"({fmt_time(b50 - e50)} more than the empty town for {lines:,} lines; "
                f"{len(big_times)} runs)",
                data={
                    "times_s": big_times,
                    "decode_s": decode_s,
                    "index_s_per_line": per_line,
                    "lines": lines,
                },
            )
        )
        assert killed is not None
        cold, restarted, total = killed
        rows.append(
            Row(
                name="startup",
                what=f"restart after `kill -9`, {ctx.lines_label}-line log, "
                f"{total - lines:,} lines appended since the cold start",
                baseline=f"that cold start: {fmt_time(cold)}",
                median=fmt_time(restarted),
                p99="—",
                ratio=fmt_ratio(restarted / cold),
                goal="≤ 1 s",
                met=restarted <= 1.0,
                note="no clean stop: the restart reads the last periodic index checkpoint "
                "and indexes the lines after it",
                data={"restart_s": restarted, "cold_s": cold, "lines": total},
            )
        )
        rows.append(
            Row(
                name="startup",
                what=f"restart to first `ping`, {ctx.lines_label}-line log, index snapshot saved",
                baseline=f"the first (cold) start: {fmt_time(b50)}",
                median=fmt_time(median(warm_times)),
                p99=fmt_time(pct(warm_times, 99)),
                ratio=fmt_ratio(median(warm_times) / b50),
                goal="≤ 1 s",
                met=median(warm_times) <= 1.0,
                note="a clean stop (and a slow cold start) saves .gastownd/index.snapshot; "
                "a restart reads it and indexes only lines appended since",
                data={"times_s": warm_times, "cold_times_s": big_times},
            )
        )
    if "memory" in names:
        m_empty = median(empty_rss)
        rows.append(
            Row(
                name="memory",
                what="RSS idle, empty town",
                baseline=f"bare `python`: {fmt_mb(bare_rss)}",
                median=fmt_mb(m_empty),
                p99=fmt_mb(max(empty_rss)),
                ratio=fmt_ratio(m_empty / bare_rss),
                goal="≤ 40 MB",
                met=m_empty <= 40 * 1024,
                data={"rss_kb": empty_rss, "baseline_rss_kb": bare_rss},
            )
        )
        per_line_bytes = (big_rss - m_empty) * 1024 / lines
        rows.append(
            Row(
                name="memory",
                what=f"RSS with the {ctx.lines_label}-line log indexed",
                baseline=f"bare `python`: {fmt_mb(bare_rss)}",
                median=fmt_mb(big_rss),
                p99=fmt_mb(big_rss),
                ratio=fmt_ratio(big_rss / bare_rss),
                goal="≤ 150 MB",
                met=big_rss <= 150 * 1024,
                note=f"about {per_line_bytes:.0f} bytes a line over the empty daemon",
                data={
                    "rss_kb": big_rss,
                    "baseline_rss_kb": bare_rss,
                    "bytes_per_line": per_line_bytes,
                },
            )
        )
    return rows
