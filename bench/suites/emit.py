"""Durable emit at 1, 8 and 64 concurrent clients vs gt-style writes with an fdatasync each."""

from __future__ import annotations

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
    make_town,
    median,
    remove_town,
    start_daemon,
)
from bench.harness import percentile as pct
from bench.suites.common import (
    NUDGE_ACTOR,
    NUDGE_PAYLOAD,
    Pooled,
    alternate,
    closed_loop,
    gt_line,
    gt_writers,
)
from gastown_client.protocol import Emit

LEVELS = (1, 8, 64)


def _emit() -> Emit:
    return Emit(type="nudge", actor=NUDGE_ACTOR, payload=dict(NUDGE_PAYLOAD))


def run(ctx: Context, names: list[str]) -> list[Row]:
    window = ctx.sizes.window_s
    town = make_town()
    rounds = ctx.sizes.rounds
    ours: dict[int, Pooled] = {}
    theirs: dict[int, Pooled] = {}
    folder = Path(tempfile.mkdtemp(prefix="gtb-gt-", dir="/tmp"))
    events, lock = folder / ".events.jsonl", folder / ".events.jsonl.lock"
    line = gt_line(
        "nudge", NUDGE_ACTOR, NUDGE_PAYLOAD, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    try:
        daemon = start_daemon(town)
        try:
            for level in LEVELS:
                ours[level], theirs[level] = alternate(
                    rounds,
                    partial(closed_loop, daemon.socket, _emit(), level, window),
                    partial(gt_writers, events, lock, line, level, window),
                )
            with daemon.client() as client:
                status = client.status()
        finally:
            daemon.stop()
    finally:
        remove_town(town)
        for path in (events, lock):
            path.unlink(missing_ok=True)
        folder.rmdir()

    rows: list[Row] = []
    single, single_base = ours[1], theirs[1]
    rows.append(
        Row(
            name="emit",
            what="durable `emit`, 1 client: acknowledgement latency",
            baseline=f"gt append + fdatasync, 1 writer: {fmt_time(median(single_base.latencies_s))}"
            f" / {fmt_time(pct(single_base.latencies_s, 99))}",
            median=fmt_time(median(single.latencies_s)),
            p99=fmt_time(pct(single.latencies_s, 99)),
            ratio=fmt_ratio(median(single.latencies_s) / median(single_base.latencies_s)),
            goal="p99 ≤ 2 ms",
            met=pct(single.latencies_s, 99) <= 2e-3 and single.errors == 0,
            note=f"1 client: {fmt_rate(single.rate, 'ev/s')} "
            f"vs {fmt_rate(single_base.rate, 'ev/s')}",
            data=_data(single, single_base),
        )
    )
    goals = {8: (10_000, None), 64: (30_000, 6.0)}
    for level in (8, 64):
        result, base = ours[level], theirs[level]
        floor, factor = goals[level]
        speedup = result.rate / base.rate
        met = result.rate >= floor and result.errors == 0
        goal = f"≥ {floor // 1000}k ev/s"
        if factor is not None:
            met = met and speedup >= factor
            goal += f" and ≥ {factor:g}× baseline"
        rows.append(
            Row(
                name="emit",
                what=f"durable `emit` throughput, {level} concurrent clients (1 in flight each)",
                baseline=f"gt append + fdatasync, {level} writers: {fmt_rate(base.rate, 'ev/s')}",
                median=fmt_rate(result.rate, "ev/s"),
                p99=f"ack p99 {fmt_time(pct(result.latencies_s, 99))}",
                ratio=fmt_ratio(speedup),
                goal=goal,
                met=met,
                note=(f"{result.errors} error replies; " if result.errors else "")
                + f"median of {len(result.rates)} windows of {window:g} s",
                data=_data(result, base),
            )
        )
    rows[-1].data["daemon_status_eventlog"] = {
        "lines": status.eventlog.lines,
        "appended": status.eventlog.appended,
        "durability": status.eventlog.durability,
    }
    return rows


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
