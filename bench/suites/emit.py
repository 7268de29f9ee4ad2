"""Durable emit at 1, 8 and 64 concurrent clients vs gt-style writes with an fdatasync each.

Run once per event loop (asyncio's own, and uvloop when it is installed).
The one-client latency is compared with the floor: one append and one
``fdatasync`` on a file kept open, measured right before each window. The
throughput windows also take turns with ``bench.refserver``, the least a
Python server does for a durable emit (same loop, one writer thread, group
commit, no index): a row of its own gives the daemon's rate as a share of the
reference's, round by round in the same windows (goal: at least 0.9), so the
gap left is the daemon's own work, told apart from Python's and the disk's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.context import Context
from bench.harness import (
    Row,
    fmt_rate,
    fmt_ratio,
    fmt_time,
    loops,
    make_town,
    median,
    remove_town,
    start_daemon,
    with_loop,
)
from bench.harness import percentile as pct
from bench.suites.common import (
    NUDGE_ACTOR,
    NUDGE_PAYLOAD,
    LoadResult,
    Pooled,
    alternate,
    baseline_server,
    closed_loop,
    gt_line,
    gt_writers,
    nudge_emit,
)

LEVELS = (1, 8, 64)
GOALS = {8: 3.0, 64: 8.0}
# The daemon's emit rate as a share of bench.refserver's, in the same windows.
REFERENCE_SHARE = 0.9
FSYNC_SAMPLES = 300


def bare_fsync(path: Path, line: bytes, samples: int = FSYNC_SAMPLES) -> LoadResult:
    """One append and one ``fdatasync`` on a file kept open: the floor of a durable emit."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    latencies = []
    try:
        started = time.perf_counter()
        for _ in range(samples):
            begun = time.perf_counter()
            os.write(fd, line)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - begun)
        window = time.perf_counter() - started
    finally:
        os.close(fd)
    return LoadResult(count=samples, errors=0, window_s=window, latencies_s=latencies)


def run(ctx: Context, names: list[str]) -> list[Row]:
    rows: list[Row] = []
    for loop in loops():
        rows += _run_loop(ctx, loop)
    return rows


def _run_loop(ctx: Context, loop: str) -> list[Row]:
    window = ctx.sizes.window_s
    town = make_town(with_loop(loop))
    rounds = ctx.sizes.rounds
    ours: dict[int, Pooled] = {}
    theirs: dict[int, Pooled] = {}
    refs: dict[int, Pooled] = {}
    folder = Path(tempfile.mkdtemp(prefix="gtb-gt-", dir="/tmp"))
    events, lock = folder / ".events.jsonl", folder / ".events.jsonl.lock"
    line = gt_line(
        "nudge", NUDGE_ACTOR, NUDGE_PAYLOAD, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    try:
        with baseline_server("bench.refserver", str(folder / "ref.jsonl"), loop) as reference:
            daemon = start_daemon(town)
            try:
                ours[1], theirs[1] = alternate(
                    rounds,
                    partial(closed_loop, daemon.socket, nudge_emit(), 1, window),
                    partial(bare_fsync, folder / "floor.jsonl", line),
                )
                for level in LEVELS[1:]:
                    runs: tuple[list[LoadResult], ...] = ([], [], [])
                    for _ in range(rounds):
                        runs[0].append(closed_loop(daemon.socket, nudge_emit(), level, window))
                        runs[1].append(closed_loop(reference, nudge_emit(), level, window))
                        runs[2].append(gt_writers(events, lock, line, level, window))
                    ours[level], refs[level], theirs[level] = (Pooled.of(r) for r in runs)
                with daemon.client() as client:
                    status = client.status()
            finally:
                daemon.stop()
    finally:
        remove_town(town)
        shutil.rmtree(folder)

    rows: list[Row] = []
    single, floor = ours[1], theirs[1]
    s50, f50 = median(single.latencies_s), median(floor.latencies_s)
    rows.append(
        Row(
            name="emit",
            what=f"durable `emit`, 1 client: acknowledgement latency ({loop})",
            baseline=f"one append + `fdatasync` on an open file: {fmt_time(f50)}"
            f" / {fmt_time(pct(floor.latencies_s, 99))}",
            median=fmt_time(s50),
            p99=fmt_time(pct(single.latencies_s, 99)),
            ratio=fmt_ratio(s50 / f50),
            goal="p50 ≤ 2× baseline",
            met=s50 <= 2 * f50 and single.errors == 0,
            note=f"1 client: {fmt_rate(single.rate, 'ev/s')}",
            data=_data(single, floor),
        )
    )
    for level in (8, 64):
        result, base, ref = ours[level], theirs[level], refs[level]
        speedup = result.rate / base.rate
        factor = GOALS[level]
        rows.append(
            Row(
                name="emit",
                what=f"durable `emit` throughput, {level} concurrent clients (1 in flight each; "
                f"{loop})",
                baseline=f"gt's way, {level} writers (flock, append, fdatasync each): "
                f"{fmt_rate(base.rate, 'ev/s')}",
                median=fmt_rate(result.rate, "ev/s"),
                p99=f"ack p99 {fmt_time(pct(result.latencies_s, 99))}",
                ratio=fmt_ratio(speedup),
                goal=f"≥ {factor:g}× baseline",
                met=speedup >= factor and result.errors == 0,
                note=(f"{result.errors} error replies; " if result.errors else "")
                + f"median of {len(result.rates)} windows of {window:g} s, alternating with "
                f"the baseline; ack p50 {fmt_time(median(result.latencies_s))} vs "
                f"{fmt_time(median(base.latencies_s))}; reference server (bench.refserver, "
                f"same windows): {fmt_rate(ref.rate, 'ev/s')} = "
                f"{fmt_ratio(ref.rate / base.rate)} baseline, the daemon "
                f"{fmt_ratio(result.rate / ref.rate)} of it",
                data=_data(result, base)
                | {"reference_rate": ref.rate, "reference_rates": ref.rates},
            )
        )
    for level in (8, 64):
        rows.append(_reference_row(ours[level], refs[level], level, loop, window))
    rows[-1].data["daemon_status_eventlog"] = {
        "lines": status.eventlog.lines,
        "appended": status.eventlog.appended,
        "durability": status.eventlog.durability,
    }
    return rows


def _reference_row(result: Pooled, ref: Pooled, level: int, loop: str, window: float) -> Row:
    """The daemon against the least a Python server can do, round by round: each round's
    ratio comes from two adjacent windows, so drift on a shared host cancels out."""
    shares = [ours / theirs for ours, theirs in zip(result.rates, ref.rates, strict=True)]
    share = median(shares)
    return Row(
        name="emit",
        what=f"durable `emit` throughput vs the reference server, {level} concurrent clients "
        f"({loop})",
        baseline=f"bench.refserver, same windows: {fmt_rate(ref.rate, 'ev/s')}",
        median=fmt_rate(result.rate, "ev/s"),
        p99=f"ack p99 {fmt_time(pct(result.latencies_s, 99))} vs "
        f"{fmt_time(pct(ref.latencies_s, 99))}",
        ratio=fmt_ratio(share),
        goal=f"≥ {REFERENCE_SHARE:g}× baseline",
        met=share >= REFERENCE_SHARE and result.errors == 0,
        note=f"median of {len(shares)} round(s)' ratios (daemon window / the reference's next "
        f"window, {window:g} s each): " + ", ".join(f"{r:.2f}" for r in shares),
        data=_data(result, ref) | {"round_ratios": shares},
    )


def _data(result: Pooled, base: Pooled) -> dict[str, object]:
    return {
        "rate": result.rate,
        "baseline_rate": base.rate,
        "errors": result.errors,
        "rates": result.rates,
        "baseline_rates": base.rates,
        "ack_p50_s": median(result.latencies_s),
        "ack_p99_s": pct(result.latencies_s, 99),
        "baseline_p50_s": median(base.latencies_s),
        "baseline_p99_s": pct(base.latencies_s, 99),
    }
