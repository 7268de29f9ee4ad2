"""Resident memory through a cold start of a big log, sampled every 100 ms.

``python -m bench.rss_cold_start LOG`` starts the daemon on a copy of LOG (no
snapshot), samples ``VmRSS`` of the daemon and of each of its child processes
(the indexer workers) from ``/proc`` every ``--every`` seconds, from exec until
``--after`` seconds past the end of the background index, and prints one JSON
line: the daemon's peak, the peak of the daemon plus its workers, the daemon's
RSS once indexed, and the times of the first ping and of the index's end. The
figure the issue bounds (150 MB) is the daemon's own peak; the workers are
separate processes, reported beside it.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from bench.harness import Daemon, live_rss_kb, make_town, remove_town
from bench.suites.startup import descendants


class Sampler:
    """VmRSS of a process and its children, every ``every`` seconds, on a thread."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int, int, int]] = []  # (t, own, children, workers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            children = descendants(self.pid)
            own = live_rss_kb(self.pid)
            workers = sum(live_rss_kb(child) for child in children)
            self.samples.append((time.monotonic() - self.started, own, workers, len(children)))
            self._stop.wait(self.every)


def measure(log: Path, every: float, after: float, restart: bool) -> dict[str, object]:
    town = make_town(log=log)
    try:
        if restart:  # a start on the snapshot a clean stop saved, rather than a cold one
            first = Daemon(town).wait_ready()
            with first.client() as client:
                while getattr(client.status(), "indexing", None) is not None:
                    time.sleep(0.02)
            first.stop()
        daemon = Daemon(town)
        with Sampler(daemon.pid, every) as sampler:
            try:
                daemon.wait_ready(poll_s=0.01)
                with daemon.client() as client:
                    while getattr(client.status(), "indexing", None) is not None:
                        time.sleep(0.02)
                indexed_s = time.monotonic() - daemon.started
                time.sleep(after)
                settled_kb = live_rss_kb(daemon.pid)
            finally:
                daemon.stop()
        samples = sampler.samples
        return {
            "peak_daemon_mb": round(max(s[1] for s in samples) / 1024, 1),
            "peak_daemon_plus_workers_mb": round(max(s[1] + s[2] for s in samples) / 1024, 1),
            "max_workers": max(s[3] for s in samples),
            "indexed_mb": round(settled_kb / 1024, 1),
            "first_ping_s": round(daemon.ready_after_s, 3),
            "indexed_s": round(indexed_s, 3),
            "samples": len(samples),
            "trace_mb": [round(s[1] / 1024) for s in samples],
        }
    finally:
        remove_town(town)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--every", type=float, default=0.1)
    parser.add_argument("--after", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--restart", action="store_true", help="measure a warm start")
    args = parser.parse_args()
    for _ in range(args.runs):
        print(json.dumps(measure(args.log, args.every, args.after, args.restart)), flush=True)


if __name__ == "__main__":
    main()
