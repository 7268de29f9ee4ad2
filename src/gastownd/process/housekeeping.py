"""The parts no answer needs, started once the daemon has answered its first request.

The watcher (lines other writers append), the periodic prune, the spool
ingester, the wisp reaper and the release of freed memory (and glibc's mmap threshold, set
through ctypes). Started before serving, their imports
(watchfiles, the pruner and its steps) and their first rounds ran between the
first accepted connection and its answer: a client waiting on a
cold start (under socket activation, the first hook call of the day) waited
for them. Nothing they do is owed to that client: lines others appended
before the watch are found by its first round, spooled hook calls by the
ingester's, and the first prune already waits for the background index.

With no client at all, they start ``START_AFTER_S`` after ready.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

import anyio

from gastownd.eventlog.indexer import fix_mmap_threshold
from gastownd.process.config import parse_duration
from gastownd.process.daemon import Daemon
from gastownd.process.memory import release_periodically

if TYPE_CHECKING:
    from gastownd.sessions.spool import SpoolIngester

START_AFTER_S = 1.0
TEST_MODULES_ENV = "GASTOWND_TEST_MODULES_FILE"


async def run_housekeeping(
    daemon: Daemon, ingester: SpoolIngester, answered: anyio.Event, stop: anyio.Event
) -> None:
    """Wait for the first answer (or ``START_AFTER_S``), then run the housekeeping until
    cancelled. Set ``stop`` before cancelling: the watches run in threads that only notice
    ``stop``."""
    with anyio.move_on_after(START_AFTER_S):
        await answered.wait()
    report_modules_for_tests(answered.is_set())
    # ``gastownd run`` paused the collector for the start-up (``process/command.py``).
    gc.enable()
    # Here, not at the top: importing them is part of what the first answer no longer waits for.
    from gastownd.eventlog import pruner
    from gastownd.eventlog.watcher import watch_eventlog

    # For the index's columns once they grow by appends (a start on a long log did it).
    fix_mmap_threshold()
    config = daemon.config
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(
            watch_eventlog,
            daemon.eventlog,
            int(parse_duration(config.eventlog.watch_step) * 1000),
            stop,
        )
        tasks.start_soon(pruner.run_periodic, daemon)
        tasks.start_soon(ingester.run, stop)
        tasks.start_soon(release_periodically)
        tasks.start_soon(
            daemon.sessions.run_reaper,
            parse_duration(config.wisps.idle_timeout),
            parse_duration(config.wisps.reap_interval),
        )


def report_modules_for_tests(answered: bool, environ: Mapping[str, str] = os.environ) -> None:
    """TEST-ONLY: with ``GASTOWND_TEST_MODULES_FILE=<path>`` set, write there (as JSON) whether
    a request was answered, every module imported so far and whether the garbage collector
    runs, just before the housekeeping imports its own (and resumes the collector): tests
    pin what the first answer does not wait for. Never set it outside tests."""
    path = environ.get(TEST_MODULES_ENV)
    if not path:
        return
    report = {"answered": answered, "modules": sorted(sys.modules), "collecting": gc.isenabled()}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle)
