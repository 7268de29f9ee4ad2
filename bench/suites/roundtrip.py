"""Round trip: ping latency on one connection, and 32-client throughput."""

from __future__ import annotations

import socket
import subprocess
import time
from functools import partial

from bench.context import Context
from bench.harness import (
    PYTHON,
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
from bench.suites.common import alternate, broker, closed_loop
from gastown_client.client import Client
from gastown_client.protocol import Ping

CLIENTS = 32
DEPTH = 4

# The child end of the baseline socketpair: echo whatever comes in.
_ECHO = """
import os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
while True:
    data = sock.recv(65536)
    if not data:
        break
    sock.sendall(data)
"""


def socketpair_echo(samples: int) -> list[float]:
    """Round trips of a ping-sized frame over a socketpair to an echoing process."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = subprocess.Popen(
        [PYTHON, "-c", _ECHO, str(theirs.fileno())], pass_fds=[theirs.fileno()]
    )
    theirs.close()
    frame = b'{"op":"ping","id":1}\n'
    times: list[float] = []
    try:
        for n in range(samples + 500):
            started = time.perf_counter_ns()
            ours.sendall(frame)
            received = b""
            while not received.endswith(b"\n"):
                received += ours.recv(65536)
            if n >= 500:
                times.append((time.perf_counter_ns() - started) / 1e9)
    finally:
        ours.close()
        child.wait(10)
    return times


def ping_times(client: Client, samples: int) -> list[float]:
    for _ in range(500):
        client.ping()
    times: list[float] = []
    for _ in range(samples):
        started = time.perf_counter_ns()
        client.ping()
        times.append((time.perf_counter_ns() - started) / 1e9)
    return times


def run(ctx: Context, names: list[str]) -> list[Row]:
    sizes = ctx.sizes
    rows: list[Row] = []
    for loop in loops():
        town = make_town(with_loop(loop))
        try:
            daemon = start_daemon(town)
            try:
                pings: list[float] = []
                if loop == "asyncio":
                    with daemon.client() as client:
                        pings = ping_times(client, sizes.ping_samples)
                    echo = socketpair_echo(sizes.ping_samples)
                with broker() as path:
                    load, base_load = alternate(
                        sizes.rounds,
                        partial(
                            closed_loop, daemon.socket, Ping(), CLIENTS, sizes.window_s, depth=DEPTH
                        ),
                        partial(closed_loop, path, Ping(), CLIENTS, sizes.window_s, depth=DEPTH),
                    )
            finally:
                daemon.stop()
        finally:
            remove_town(town)
        if pings:
            p50, p99 = median(pings), pct(pings, 99)
            b50, b99 = median(echo), pct(echo, 99)
            rows.append(
                Row(
                    name="roundtrip",
                    what="`ping` round trip, one connection, blocking `Client` (asyncio)",
                    baseline=f"socketpair echo in Python: {fmt_time(b50)} / {fmt_time(b99)}",
                    median=fmt_time(p50),
                    p99=fmt_time(p99),
                    ratio=fmt_ratio(p50 / b50),
                    goal="≤ 50 µs / ≤ 250 µs",
                    met=p50 <= 50e-6 and p99 <= 250e-6,
                    data={
                        "p50_s": p50,
                        "p99_s": p99,
                        "baseline_p50_s": b50,
                        "baseline_p99_s": b99,
                        "samples": len(pings),
                    },
                )
            )
        ratio = load.rate / base_load.rate
        rows.append(
            Row(
                name="roundtrip",
                what=f"`ping` throughput, {CLIENTS} connections in 4 processes "
                f"({DEPTH} in flight each; {loop})",
                baseline=f"bare asyncio echo server, same load: {fmt_rate(base_load.rate)}",
                median=fmt_rate(load.rate),
                p99=f"latency p99 {fmt_time(pct(load.latencies_s, 99))}",
                ratio=fmt_ratio(ratio),
                goal="≥ 0.6× baseline",
                met=ratio >= 0.6 and load.errors == 0,
                note=(f"{load.errors} error replies; " if load.errors else "")
                + f"median of {len(load.rates)} windows of {sizes.window_s:g} s, "
                "alternating with the baseline",
                data={
                    "rate": load.rate,
                    "baseline_rate": base_load.rate,
                    "errors": load.errors,
                    "rates": load.rates,
                    "baseline_rates": base_load.rates,
                    "latency_p50_s": median(load.latencies_s),
                    "latency_p99_s": pct(load.latencies_s, 99),
                },
            )
        )
    return rows
