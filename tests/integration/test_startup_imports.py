"""What a start imports before its first answer, and that the rest still starts.

The daemon reports ``sys.modules`` (``GASTOWND_TEST_MODULES_FILE``, see
``process/housekeeping.py``) at the moment it starts the housekeeping: after
its first answer, before the housekeeping's own imports. A module missing from
that report was not imported before the first answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from gastown_client import paths
from gastown_client.client import Client
from tests.conftest import DaemonProcess, InProcess
from tests.integration.test_prune import line, write_log

# Not needed by any first answer: imported later, or never without their configuration.
DEFERRED = [
    "gastownd.federation.link",  # federation off (the default)
    "nats",
    "gastownd.eventlog.pruner",  # the periodic prune starts after the first answer
    "gastownd.eventlog.prune_steps",
    "gastownd.eventlog.prune_plan",
    "gastownd.eventlog.prune_planner",
    "gastownd.eventlog.watcher",  # so do the watcher and the spool's watch
    "watchfiles",
    "gastownd.metrics.http",  # no [metrics] listen
    "gastownd.metrics.collector",  # at the first scrape
    "gastownd.metrics.exposition",  # prometheus_client: at the first scrape
    "prometheus_client",
    "wsgiref",
    "shutil",  # argparse's help formatter would import it (process/command.py)
    "ctypes",  # malloc_trim after parsing a long log only (eventlog/recovery.py)
]


def _default_config(town: Path) -> None:
    """The default settings: retention on, so a prune is due at start."""
    (town / "settings" / "gastownd.toml").write_text("")


def _start(town: Path, report: Path) -> DaemonProcess:
    return DaemonProcess(town, env={**os.environ, "GASTOWND_TEST_MODULES_FILE": str(report)})


def _read_report(report: Path, proc: DaemonProcess, timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if report.exists():
            text = report.read_text()
            if text:
                data: dict[str, Any] = json.loads(text)
                return data
        assert proc.proc.poll() is None, proc.log()
        time.sleep(0.02)
    raise AssertionError(f"no module report in {timeout_s}s: {proc.log()}")


def test_the_first_answer_waits_for_no_federation_pruner_watcher_or_metrics(town: Path) -> None:
    _default_config(town)
    report = town / "modules.json"
    proc = _start(town, report).wait_ready()
    try:
        data = _read_report(report, proc)
        assert data["answered"] is True
        modules = set(data["modules"])
        assert "gastownd.process.app" in modules and "gastownd.ops" in modules
        imported = [name for name in DEFERRED if name in modules]
        assert imported == [], f"imported before the first answer: {imported}"
        # The collector was paused for the start-up; the housekeeping resumes it.
        assert data["collecting"] is False
        with proc.client() as client:
            # The housekeeping runs: the prune it started answers, and a scrape renders.
            assert client.prune(dry_run=True).pruned_total == 0
            assert "gastownd_build_info" in client.metrics().text
    finally:
        assert proc.terminate() == 0


async def test_the_housekeeping_sets_the_mmap_threshold_for_the_daemons_life(
    daemon: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty town's start never set it (``indexer.index_range``): the index may still grow
    by appends, so the housekeeping does, after the first answer."""
    from gastownd.process import housekeeping

    called = anyio.Event()
    monkeypatch.setattr(housekeeping, "fix_mmap_threshold", called.set)
    async with daemon.client() as client:
        await client.ping()
    with anyio.fail_after(10):
        await called.wait()


def test_with_no_client_the_housekeeping_starts_anyway(town: Path) -> None:
    """Nobody asks anything: the start-up prune still moves expired lines out of the log."""
    (town / "settings" / "gastownd.toml").write_text("[retention]\narchive = true\n")
    write_log(town, [line("nudge", timedelta(days=10), i=0)])
    report = town / "modules.json"
    proc = _start(town, report)
    try:
        data = _read_report(report, proc)
        assert data["answered"] is False
        with Client(paths.socket_path(town)) as client:
            deadline = time.monotonic() + 15
            while (info := client.status().eventlog).last_prune_at is None:
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.05)
        assert (info.lines, info.last_prune_removed, info.archive.days) == (0, 1, 1)
    finally:
        assert proc.terminate() == 0


def test_an_index_worker_imports_none_of_the_daemon() -> None:
    """A cold start's index workers run ``python -m gastownd.eventlog.indexer``: importing the
    event log package for it must not bring the event loop, logging or the store."""
    listing = subprocess.run(
        [sys.executable, "-c", "import sys, gastownd.eventlog.indexer; print(*sys.modules)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    loaded = [name for name in ("asyncio", "anyio", "structlog", "sqlite3") if name in listing]
    assert loaded == [], f"an index worker imports {loaded}"
    assert "gastownd.eventlog.event_log" not in listing
