"""Start-up time and resident memory, on an empty town and on the big log.

Cold start (no snapshot), restart after a clean stop, and restart after
``kill -9`` with lines appended since the last clean stop (the daemon had
written periodic index checkpoints meanwhile). A cold start serves at once
and indexes in the background: it is timed to the first answered ``ping``,
``emit`` and hook call (each sent by a client on the socket, so answered by
the daemon, never spooled), and to the index being complete, which is
compared with a plain msgspec decode of every line of the file into dicts,
in this process, between the cold starts: what any reader of the log must
pay. Its resident memory (the daemon and its index workers, summed) is
sampled every 100 ms from exec until 1 s after the index is complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
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
    live_rss_kb,
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
SAMPLE_EVERY_S = 0.1
# Lines appended (gt-style) between the cold start and the kill -9.
APPENDED_FULL = 200_000
APPENDED_QUICK = 20_000


def decode_file(path: Path) -> float:
    """Seconds to decode every line of ``path`` into a dict with msgspec, one line at a time."""
    decode = msgspec.json.Decoder(dict).decode
    started = time.perf_counter()
    carry = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(16 << 20):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            for line in data[: cut - 1].split(b"\n"):
                decode(line)
            carry = data[cut:]
    return time.perf_counter() - started


# ------------------------------------------------------------------ memory


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its index workers), from each process's parent in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


@dataclass
class RssTrace:
    """RSS samples (kB) of a daemon alone and with its workers, one every ``SAMPLE_EVERY_S``."""

    daemon_kb: list[int] = field(default_factory=list)
    total_kb: list[int] = field(default_factory=list)
    most_workers: int = 0


class RssSampler:
    """Samples ``pid`` and its descendants on a thread of its own from ``start`` to ``stop``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.trace = RssTrace()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        trace = self.trace
        while not self._done.is_set():
            own = live_rss_kb(self.pid)
            workers = descendants(self.pid)
            trace.daemon_kb.append(own)
            trace.total_kb.append(own + sum(live_rss_kb(worker) for worker in workers))
            trace.most_workers = max(trace.most_workers, len(workers))
            self._done.wait(SAMPLE_EVERY_S)

    def stop(self) -> RssTrace:
        self._done.set()
        self._thread.join()
        return self.trace


# ------------------------------------------------------------------ cold starts


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
        handled = client.call(_session_start()).handled
        assert handled, "the hook call was not handled"
        hook_s = time.monotonic() - daemon.started
        deadline = time.monotonic() + timeout_s
        while client.status().indexing is not None:
            if time.monotonic() > deadline:
                raise TimeoutError("the background index did not finish")
            time.sleep(0.005)
        indexed_s = time.monotonic() - daemon.started
    return ColdStart(ping_s, emit_s, hook_s, indexed_s)


def sampled_cold_start(town: Path) -> tuple[Daemon, ColdStart, RssTrace]:
    """Exec a daemon on ``town`` (no snapshot), time its first answers and its index,
    sampling its memory from exec until ``SETTLE_S`` after the index is complete."""
    daemon = Daemon(town)
    sampler = RssSampler(daemon.pid).start()
    try:
        daemon.wait_ready()
        cold = cold_start(daemon)
        time.sleep(SETTLE_S)
    except BaseException:
        sampler.stop()
        daemon.stop()
        raise
    return daemon, cold, sampler.stop()


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


# ------------------------------------------------------------------ the suite


@dataclass
class EmptyTown:
    """Exec to first answered ping on an empty town, each run followed by ``python -c pass``."""

    times_s: list[float] = field(default_factory=list)
    python_s: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)


def empty_town_starts(reps: int) -> EmptyTown:
    runs = EmptyTown()
    for _ in range(reps):
        town = make_town()
        try:
            daemon = start_daemon(town)
            try:
                runs.times_s.append(daemon.ready_after_s)
                time.sleep(SETTLE_S if not runs.rss_kb else 0.2)
                runs.rss_kb.append(daemon.rss_kb())
            finally:
                daemon.stop()
        finally:
            remove_town(town)
        runs.python_s.append(time_process([PYTHON, "-c", "pass"]))
    return runs


@dataclass
class BigLog:
    """Cold starts on the big log, each followed by a decode of the file and a warm restart."""

    colds: list[ColdStart] = field(default_factory=list)
    traces: list[RssTrace] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    warm_s: list[float] = field(default_factory=list)


def big_log_starts(log: Path, reps: int, *, warm: bool) -> BigLog:
    runs = BigLog()
    for _ in range(reps):
        town = make_town(log=log)
        try:
            daemon, cold, trace = sampled_cold_start(town)
            daemon.stop()  # a clean stop saves the index snapshot
            runs.colds.append(cold)
            runs.traces.append(trace)
            runs.decode_s.append(decode_file(log))
            if warm:
                again = start_daemon(town)
                runs.warm_s.append(again.ready_after_s)
                again.stop()
        finally:
            remove_town(town)
    return runs


def run(ctx: Context, names: list[str]) -> list[Row]:
    sizes = ctx.sizes
    timing = "startup" in names
    empty = empty_town_starts(sizes.startup_reps)
    log = ctx.big_log()
    big = big_log_starts(log, max(1, sizes.big_startup_reps) if timing else 1, warm=timing)
    rows: list[Row] = []
    if timing:
        killed = restart_after_kill(log, APPENDED_QUICK if ctx.quick else APPENDED_FULL)
        rows += _timing_rows(ctx, empty, big, killed)
    if "memory" in names:
        shared = ctx.big_daemon()
        wait_indexed(shared)
        time.sleep(SETTLE_S)
        rows += _memory_rows(ctx, empty, big, shared.rss_kb(), bare_python_rss_kb())
    return rows


def wait_indexed(daemon: Daemon, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    with daemon.client() as client:
        while client.status().indexing is not None:
            if time.monotonic() > deadline:
                raise TimeoutError("the background index did not finish")
            time.sleep(0.05)


def _timing_rows(
    ctx: Context, empty: EmptyTown, big: BigLog, killed: tuple[float, float, int]
) -> list[Row]:
    lines = ctx.sizes.lines
    e50, p50 = median(empty.times_s), median(empty.python_s)
    rows = [
        Row(
            name="startup",
            what="empty town: exec to first answered `ping`",
            baseline=f"`python -c pass`: {fmt_time(p50)} / {fmt_time(pct(empty.python_s, 99))}",
            median=fmt_time(e50),
            p99=fmt_time(pct(empty.times_s, 99)),
            ratio=fmt_ratio(e50 / p50),
            goal="≤ 6× baseline",
            met=e50 <= 6 * p50,
            note="each daemon start is followed by a `python -c pass`; only what the first "
            "answer needs is imported before it (tests/integration/test_startup_imports.py)",
            data={"times_s": empty.times_s, "baseline_times_s": empty.python_s},
        )
    ]
    for field_name, op in (("ping_s", "`ping`"), ("emit_s", "`emit`"), ("hook_s", "hook call")):
        times = [getattr(c, field_name) for c in big.colds]
        rows.append(
            Row(
                name="startup",
                what=f"{ctx.lines_label}-line log, no snapshot: exec to first answered {op}",
                baseline=f"empty town, first `ping`: {fmt_time(e50)}",
                median=fmt_time(median(times)),
                p99=fmt_time(pct(times, 99)),
                ratio=fmt_ratio(median(times) / e50),
                goal="≤ 300 ms",
                met=median(times) <= 0.3,
                note="in order on one connection after the first `ping`: `emit`, then a "
                "`SessionStart` hook call, each answered by the daemon (not spooled); older "
                "lines are indexed in the background (`status.indexing`)"
                if op == "`ping`"
                else "",
                data={"times_s": times, "baseline_times_s": empty.times_s},
            )
        )
    indexed = [c.indexed_s for c in big.colds]
    b50, d50 = median(indexed), median(big.decode_s)
    rows.append(
        Row(
            name="startup",
            what=f"{ctx.lines_label}-line log, no snapshot: exec to fully indexed",
            baseline=f"msgspec decode of every line into a dict: {fmt_time(d50)}",
            median=fmt_time(b50),
            p99=fmt_time(pct(indexed, 99)),
            ratio=fmt_ratio(b50 / d50),
            goal="≤ 3× baseline",
            met=b50 <= 3 * d50,
            note=f"indexing costs about {(b50 - e50) / lines * 1e6:.1f} µs a line "
            f"({fmt_time(b50 - e50)} more than the empty town for {lines:,} lines; "
            f"{len(indexed)} runs, each followed by the decode, in the bench's process)",
            data={"times_s": indexed, "decode_s": big.decode_s, "lines": lines},
        )
    )
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
            baseline=f"the first (cold) start, fully indexed: {fmt_time(b50)}",
            median=fmt_time(median(big.warm_s)),
            p99=fmt_time(pct(big.warm_s, 99)),
            ratio=fmt_ratio(median(big.warm_s) / b50),
            goal="≤ 1 s",
            met=median(big.warm_s) <= 1.0,
            note="a clean stop (and a slow cold start) saves .gastownd/index.snapshot; "
            "a restart reads it and indexes only lines appended since",
            data={"times_s": big.warm_s, "cold_times_s": indexed},
        )
    )
    return rows


def _memory_rows(
    ctx: Context, empty: EmptyTown, big: BigLog, indexed_rss: int, bare_rss: int
) -> list[Row]:
    lines = ctx.sizes.lines
    m_empty = median(empty.rss_kb)
    peaks = [max(trace.total_kb) for trace in big.traces]
    own_peaks = [max(trace.daemon_kb) for trace in big.traces]
    workers = max(trace.most_workers for trace in big.traces)
    peak = max(peaks)
    per_line_bytes = (indexed_rss - m_empty) * 1024 / lines
    return [
        Row(
            name="memory",
            what="RSS idle, empty town",
            baseline=f"bare `python`: {fmt_mb(bare_rss)}",
            median=fmt_mb(m_empty),
            p99=fmt_mb(max(empty.rss_kb)),
            ratio=fmt_ratio(m_empty / bare_rss),
            goal="≤ 40 MB",
            met=m_empty <= 40 * 1024,
            data={"rss_kb": empty.rss_kb, "baseline_rss_kb": bare_rss},
        ),
        Row(
            name="memory",
            what=f"peak RSS during the cold start, {ctx.lines_label}-line log, no snapshot "
            "(the daemon)",
            baseline=f"bare `python`: {fmt_mb(bare_rss)}",
            median=fmt_mb(median(own_peaks)),
            p99=fmt_mb(max(own_peaks)),
            ratio=fmt_ratio(median(own_peaks) / bare_rss),
            goal="≤ 150 MB",
            # Issue 21 item 3 bounds the daemon process; its index workers are short-lived
            # helpers, shown in the next row.
            met=max(own_peaks) <= 150 * 1024,
            note=f"sampled every {SAMPLE_EVERY_S * 1000:.0f} ms from exec until "
            f"{SETTLE_S:.0f} s after the index is complete; the verdict is on the highest "
            f"of {len(own_peaks)} cold starts",
            data={
                "daemon_peak_kb": own_peaks,
                "samples_kb": [trace.daemon_kb for trace in big.traces],
                "baseline_rss_kb": bare_rss,
            },
        ),
        Row(
            name="memory",
            what=f"peak RSS during the cold start, {ctx.lines_label}-line log, no snapshot "
            "(the daemon and its index workers, summed)",
            baseline=f"bare `python`: {fmt_mb(bare_rss)}",
            median=fmt_mb(median(peaks)),
            p99=fmt_mb(peak),
            ratio=fmt_ratio(median(peaks) / bare_rss),
            goal="—",
            note=f"the same samples, each the daemon's RSS plus its index workers' "
            f"({f'up to {workers} at once' if workers else 'none ran'}); reported, not judged",
            data={
                "peak_kb": peaks,
                "most_workers": workers,
                "samples_kb": [trace.total_kb for trace in big.traces],
                "baseline_rss_kb": bare_rss,
            },
        ),
        Row(
            name="memory",
            what=f"RSS with the {ctx.lines_label}-line log indexed",
            baseline=f"bare `python`: {fmt_mb(bare_rss)}",
            median=fmt_mb(indexed_rss),
            p99=fmt_mb(indexed_rss),
            ratio=fmt_ratio(indexed_rss / bare_rss),
            goal="≤ 150 MB",
            met=indexed_rss <= 150 * 1024,
            note=f"about {per_line_bytes:.0f} bytes a line over the empty daemon",
            data={
                "rss_kb": indexed_rss,
                "baseline_rss_kb": bare_rss,
                "bytes_per_line": per_line_bytes,
            },
        ),
    ]
