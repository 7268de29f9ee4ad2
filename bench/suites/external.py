"""A line appended by another process (gt-style) to a subscriber; the daemon's idle CPU."""

from __future__ import annotations

import fcntl
import os
import random
import time
from pathlib import Path

import msgspec

from bench.context import Context
from bench.harness import (
    Row,
    Workers,
    fmt_ratio,
    fmt_time,
    make_town,
    median,
    proc_cpu_s,
    remove_town,
    start_daemon,
)
from bench.harness import percentile as pct
from gastown_client import codec, paths
from gastown_client.protocol import Subscribe
from gastownd.process.config import EventLogConfig, parse_duration

OTHER_STEPS_MS = (10, 5)


def gt_append(town: Path, line: bytes) -> None:
    """Exactly gt's append: flock the sidecar, open O_APPEND, one write, close, unlock."""
    lock_fd = os.open(paths.events_lock_path(town), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        fd = os.open(paths.events_path(town), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
    finally:
        os.close(lock_fd)


def _line(n: int) -> bytes:
    payload = {"n": n, "rig": "gastown", "t": time.monotonic_ns(), "target": "gastown/polecats/nux"}
    return (
        b'{"ts":"'
        + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()
        + b'","source":"gt","type":"nudge","actor":"gastown/witness","payload":'
        + msgspec.json.encode(payload, order="sorted")
        + b',"visibility":"feed"}\n'
    )


def _wait_files(files: list[Path], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(f.exists() for f in files):
        if time.monotonic() > deadline:
            raise TimeoutError("a worker never became ready")
        time.sleep(0.01)


def run(ctx: Context, names: list[str]) -> list[Row]:
    sizes = ctx.sizes
    count = sizes.external_lines
    step_ms = int(parse_duration(EventLogConfig().watch_step) * 1000)
    # The daemon's step first (the baseline), then finer ones for reference.
    steps = [step_ms, *(s for s in OTHER_STEPS_MS if s != step_ms)]
    rng = random.Random(ctx.seed)
    town = make_town()
    # The log exists before anyone watches it, as in a live town.
    paths.events_path(town).touch()
    workers = Workers()
    try:
        daemon = start_daemon(town)
        try:
            deadline = time.monotonic() + sizes.idle_s + count * 0.2 + 30
            ready = [town / "sub.ready"] + [town / f"watch-{step}.ready" for step in steps]
            workers.spawn(
                {
                    "kind": "subscribe",
                    "socket": str(daemon.socket),
                    "connections": 1,
                    "frame": codec.encode_frame(Subscribe(id=1)),
                    "expect": count,
                    "deadline": deadline,
                    "ready_file": str(ready[0]),
                }
            )
            for step, flag in zip(steps, ready[1:], strict=True):
                workers.spawn(
                    {
                        "kind": "watch",
                        "events": str(paths.events_path(town)),
                        "expect": count,
                        "deadline": deadline,
                        "step_ms": step,
                        "ready_file": str(flag),
                    }
                )
            _wait_files(ready)
            pids = [proc.pid for proc in workers.procs[1:]]
            time.sleep(0.5)
            cpu0, t0 = daemon.cpu_s(), time.monotonic()
            wcpu0 = [proc_cpu_s(pid) for pid in pids]
            time.sleep(sizes.idle_s)
            cpu1, t1 = daemon.cpu_s(), time.monotonic()
            wcpu1 = [proc_cpu_s(pid) for pid in pids]
            for n in range(count):
                gt_append(town, _line(n))
                time.sleep(rng.uniform(0.08, 0.16))
            sub, *watches = workers.results()
        finally:
            workers.kill()
            daemon.stop()
    finally:
        remove_town(town)

    def latencies(result: dict[str, list[list[int]]]) -> list[float]:
        return [
            (arrival - written) / 1e9 for _, n, written, arrival in result["arrivals"] if n >= 0
        ]

    ours, theirs = latencies(sub), latencies(watches[0])
    idle = (cpu1 - cpu0) / (t1 - t0)
    watcher_cpu = [(b - a) / (t1 - t0) for a, b in zip(wcpu0, wcpu1, strict=True)]
    watcher_idle = watcher_cpu[0]
    tradeoff = "; ".join(
        f"step {step} ms: median {fmt_time(median(latencies(result)))}, idle CPU {cpu * 100:.2f} %"
        for step, result, cpu in zip(steps, watches, watcher_cpu, strict=True)
    )
    m, b = median(ours), median(theirs)
    missing = count - len(ours)
    return [
        Row(
            name="external",
            what="external gt append → subscriber push",
            baseline=f"bare watchfiles watcher (step {step_ms} ms) reading the new line: "
            f"{fmt_time(b)}",
            median=fmt_time(m),
            p99=fmt_time(pct(ours, 99)),
            ratio=fmt_ratio(m / b),
            goal="median ≤ 20 ms",
            met=m <= 0.020 and missing == 0,
            note=(f"{missing} of {count} lines never arrived; " if missing else "")
            + f"{len(ours)} lines, one every 80-160 ms; bare watchers: {tradeoff}",
            data={
                "latencies_s": ours,
                "baseline_latencies_s": theirs,
                "step_ms": step_ms,
                "watchers": {
                    str(step): {"latencies_s": latencies(result), "idle_cpu": cpu}
                    for step, result, cpu in zip(steps, watches, watcher_cpu, strict=True)
                },
            },
        ),
        Row(
            name="external",
            what=f"daemon idle CPU over {sizes.idle_s:g} s (one subscriber, watcher on)",
            baseline=f"the bare watchfiles watcher: {watcher_idle * 100:.2f} %",
            median=f"{idle * 100:.2f} %",
            p99="—",
            ratio=fmt_ratio(idle / watcher_idle) if watcher_idle > 0 else "—",
            goal="≤ 1 %",
            met=idle <= 0.01,
            note="CPU from /proc/<pid>/stat utime+stime, clock ticks of "
            f"{1000 / os.sysconf('SC_CLK_TCK'):.0f} ms",
            data={"idle_cpu": idle, "baseline_idle_cpu": watcher_idle},
        ),
    ]
