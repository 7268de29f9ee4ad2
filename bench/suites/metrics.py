"""Metrics: durable emit throughput while /metrics is scraped every second, vs not scraped.

Two daemons of the same build, measured in turn in the same run (``alternate``): one with
``[metrics] listen`` set and a scraper asking for OpenMetrics once a second while its
load runs (as Prometheus with ``scrape_interval: 1s`` would), one with metrics off. Both
pay the hot-path counters; the difference is the endpoint and its scrapes.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from functools import partial
from pathlib import Path

from tests.nats_cluster import free_port

from bench.context import Context
from bench.harness import (
    NO_RETENTION,
    Daemon,
    Row,
    fmt_rate,
    fmt_ratio,
    fmt_time,
    make_town,
    median,
    proc_cpu_s,
    remove_town,
    start_daemon,
)
from bench.harness import percentile as pct
from bench.suites.common import LoadResult, alternate, closed_loop, nudge_emit

CLIENTS = 8
SCRAPE_INTERVAL_S = 1.0
GOAL = 0.97
# Back-to-back scrapes of an idle daemon, to measure the CPU one costs the daemon.
CPU_SCRAPES = 200
# At one scrape a second, at most this share of one core.
CPU_GOAL = 0.01
ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class Scraper:
    """GET /metrics every ``SCRAPE_INTERVAL_S`` in a thread; keeps each scrape's duration."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.durations_s: list[float] = []
        self.sizes: list[int] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scrape(self) -> None:
        request = urllib.request.Request(self.url, headers={"Accept": ACCEPT})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                body = response.read()
        except OSError:
            self.failures += 1
            return
        self.durations_s.append(time.perf_counter() - started)
        self.sizes.append(len(body))

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.scrape()
            next_at += SCRAPE_INTERVAL_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Scraper:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="scraper")
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()


def _scraped(scraper: Scraper, load: partial[LoadResult]) -> LoadResult:
    with scraper:
        return load()


def run(ctx: Context, names: list[str]) -> list[Row]:
    window, rounds = ctx.sizes.window_s, ctx.sizes.rounds
    port = free_port()
    towns: dict[str, Path] = {
        "scraped": make_town(NO_RETENTION + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'),
        "off": make_town(),
    }
    daemons: dict[str, Daemon] = {}
    try:
        for case, town in towns.items():
            daemons[case] = start_daemon(town)
        scraper = Scraper(port)
        scraper.scrape()  # the first scrape builds the collectors: not counted
        scraper.durations_s.clear()
        cpu_before = proc_cpu_s(daemons["scraped"].pid)
        idle = Scraper(port)
        for _ in range(CPU_SCRAPES):
            idle.scrape()
        cpu_per_scrape_s = (proc_cpu_s(daemons["scraped"].pid) - cpu_before) / CPU_SCRAPES
        ours, base = alternate(
            rounds,
            partial(
                _scraped,
                scraper,
                partial(closed_loop, daemons["scraped"].socket, nudge_emit(), CLIENTS, window),
            ),
            partial(closed_loop, daemons["off"].socket, nudge_emit(), CLIENTS, window),
        )
    finally:
        for daemon in daemons.values():
            daemon.stop()
        for town in towns.values():
            remove_town(town)
    ratio = ours.rate / base.rate
    scrapes = scraper.durations_s
    return [
        Row(
            name="metrics",
            what="daemon CPU per scrape of /metrics (OpenMetrics, idle daemon, back to back)",
            baseline=f"{CPU_SCRAPES} scrapes, one at a time, from this process",
            median=fmt_time(cpu_per_scrape_s),
            p99=f"round trip {fmt_time(pct(idle.durations_s, 99))} p99",
            ratio=fmt_ratio(cpu_per_scrape_s / SCRAPE_INTERVAL_S * 100, " % of a core at 1 s"),
            goal=f"≤ {CPU_GOAL * 100:g} % of a core at a 1 s interval",
            met=cpu_per_scrape_s / SCRAPE_INTERVAL_S <= CPU_GOAL and idle.failures == 0,
            note=(
                f"utime+stime of the daemon over the scrapes; round trip median "
                f"{fmt_time(median(idle.durations_s))}"
            ),
            data={"cpu_per_scrape_s": cpu_per_scrape_s, "round_trip_s": idle.durations_s},
        ),
        Row(
            name="metrics",
            what=(
                f"durable `emit`, {CLIENTS} clients, /metrics scraped every "
                f"{SCRAPE_INTERVAL_S:g} s vs metrics off"
            ),
            baseline=f"the same build, metrics off: {fmt_rate(base.rate, 'ev/s')}",
            median=fmt_rate(ours.rate, "ev/s"),
            p99=f"ack p99 {fmt_time(pct(ours.latencies_s, 99))}",
            ratio=fmt_ratio(ratio),
            goal=f"≥ {GOAL:g}× off",
            met=ratio >= GOAL and ours.errors == 0 and scraper.failures == 0 and bool(scrapes),
            note=(
                f"median of {len(ours.rates)} windows of {window:g} s, alternating; "
                f"{len(scrapes)} scrapes during the load, each "
                f"{fmt_time(median(scrapes)) if scrapes else '—'} median, "
                f"{fmt_time(max(scrapes)) if scrapes else '—'} worst, "
                f"{median(scraper.sizes) / 1024 if scraper.sizes else 0:.1f} KiB; "
                f"{scraper.failures} failed"
            ),
            data={
                "rates": ours.rates,
                "baseline_rates": base.rates,
                "scrape_s": scrapes,
                "scrape_failures": scraper.failures,
            },
        ),
    ]
