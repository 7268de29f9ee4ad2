"""Start-up time and resident memory, on an empty town and on the big log."""

from __future__ import annotations

import subprocess
import time

from bench.context import Context
from bench.harness import (
    PYTHON,
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

SETTLE_S = 1.0
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
    warm_times: list[float] = []
    if "startup" in names:
        log = ctx.big_log()
        for _ in range(max(1, sizes.big_startup_reps - 1)):
            town = make_town(log=log)
            try:
                daemon = start_daemon(town)
                big_times.append(daemon.ready_after_s)
                daemon.stop()  # a clean stop saves the index snapshot
                again = start_daemon(town)
                warm_times.append(again.ready_after_s)
                again.stop()
            finally:
                remove_town(town)
    big = ctx.big_daemon()
    big_times.append(big.ready_after_s)
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
                goal="≤ 250 ms",
                met=e50 <= 0.250,
                data={"times_s": empty_times, "baseline_times_s": python_times},
            )
        )
        rows.append(
            Row(
                name="startup",
                what=f"start-up to first `ping`, {ctx.lines_label}-line log",
                baseline=f"`python -c pass`: {fmt_time(p50)}",
                median=fmt_time(b50),
                p99=fmt_time(pct(big_times, 99)),
                ratio=fmt_ratio(b50 / p50),
                goal="≤ 2 s",
                met=b50 <= 2.0,
                note=f"indexing costs about {per_line * 1e6:.1f} µs a line "
                f"({fmt_time(b50 - e50)} more than the empty town for {lines:,} lines; "
                f"{len(big_times)} runs)",
                data={
                    "times_s": big_times,
                    "baseline_times_s": python_times,
                    "index_s_per_line": per_line,
                    "lines": lines,
                },
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
                goal="≤ 2 s (the issue's start-up goal, for a restart)",
                met=median(warm_times) <= 2.0,
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
                goal="≤ 200 MB",
                met=big_rss <= 200 * 1024,
                note=f"about {per_line_bytes:.0f} bytes a line over the empty daemon",
                data={
                    "rss_kb": big_rss,
                    "baseline_rss_kb": bare_rss,
                    "bytes_per_line": per_line_bytes,
                },
            )
        )
    return rows
