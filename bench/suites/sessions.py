"""Sessions: the listing (``gastownctl sessions``) of a town whose sessions were hook-fed.

Each row carries its latest digest's synopsis and the step count of all its segments, both
read from the store; rows are looked up in chunks, one trip to the store's thread each.
"""

from __future__ import annotations

import time
import uuid

from bench.context import Context
from bench.harness import Row, fmt_time, make_town, median, remove_town, start_daemon
from bench.harness import percentile as pct

STEPS = 3
OPEN = 200
# A row's share of the listing, at most (it was ~115 µs with a store trip per row).
GOAL_PER_ROW_S = 100e-6


def run(ctx: Context, names: list[str]) -> list[Row]:
    ended = 500 if ctx.quick else 2_000
    reps = 5 if ctx.quick else 20
    town = make_town()
    try:
        with start_daemon(town) as daemon, daemon.client() as client:
            for i in range(ended + OPEN):
                session = str(uuid.uuid4())
                client.session_start(session, f"gastown/polecats/p{i % 50}")
                for _ in range(STEPS):
                    client.session_step(session, "note")
                if i < ended:
                    client.session_end(session, "done")
            rows = client.sessions(limit=10_000).sessions
            right = len(rows) == ended + OPEN and all(r.step_count == STEPS for r in rows)
            times: list[float] = []
            for _ in range(reps):
                started = time.perf_counter_ns()
                client.sessions(limit=10_000)
                times.append((time.perf_counter_ns() - started) / 1e9)
    finally:
        remove_town(town)
    total = ended + OPEN
    p50 = median(times)
    per_row = p50 / total
    return [
        Row(
            name="sessions listing",
            what=f"`sessions` of {total:,} hook-fed sessions ({ended:,} ended, {STEPS} steps "
            "each), digest synopsis and step count per row",
            median=fmt_time(p50),
            p99=fmt_time(pct(times, 99)),
            goal=f"≤ {fmt_time(GOAL_PER_ROW_S)} a row",
            met=per_row <= GOAL_PER_ROW_S and right,
            note=f"{fmt_time(per_row)} a row" + ("" if right else "; rows or step counts wrong!"),
            data={"p50_s": p50, "times_s": times, "rows": total, "per_row_s": per_row},
        )
    ]
